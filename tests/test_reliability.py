"""Reliability (README, Reliability): preemption, exact resume after SIGKILL, corrupt and
half-written checkpoints, the NaN guard, input checks, safe loading, determinism, workdir checks.

The subprocess runs (module fixture `runs`) train a random tiny BERT with the MiniLM tokenizer,
dropout on, 2 epochs of 6 steps: A uninterrupted, B killed with SIGKILL at a random step and
restarted, C sent SIGTERM after its first metrics line and restarted. A, B and C start together,
then B and C resume together.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections import namedtuple
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import reliability_helpers as rh
from conftest import EMOTION_NAMES, load_script, make_emotion_data, make_tiny_encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmhl_jax import data as data_lib
from cmhl_jax import loop, runtime
from cmhl_jax.checkpoint import Checkpoints
from cmhl_jax.config import ConfigError, load_config, override
from cmhl_jax.tasks import validate_config

ROOT = rh.ROOT
TIMING_KEYS = {"samples_per_s"}
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # protocols 2-5


def load_resume_check():
    return load_script("scripts/resume_check.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_emotion_data(
        tmp_path_factory.mktemp("reliability_data"), n_train=rh.TRAIN_TEXTS, n_val=rh.VAL_TEXTS
    )


# ---------------------------------------------------------------------------------------------
# Subprocess runs: uninterrupted, SIGKILL + resume, SIGTERM + resume


def kill_seed() -> int:
    """RELIABILITY_KILL_SEED if set, else a fresh seed from the clock (printed with the step, so
    that a failing draw can be repeated)."""
    seed = os.environ.get("RELIABILITY_KILL_SEED", "").strip()
    return int(seed) if seed else time.time_ns() % 2**32


def kill_step(seed: int) -> int:
    """The step SIGKILL hits: drawn from `seed` alone, never the first or the last two."""
    return random.Random(seed).randint(2, rh.STEPS - 2)


@pytest.fixture(scope="module")
def runs(tiny_encoder_dir, data_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    a, b, c = base / "a", base / "b", base / "c"
    seed = kill_seed()
    kill_at = kill_step(seed)
    print(f"SIGKILL at step {kill_at}: repeat with RELIABILITY_KILL_SEED={seed}")

    def cmd(workdir, *extra):
        return rh.train_cmd(workdir, tiny_encoder_dir, data_dir, *extra)

    # A saves at epoch ends only, B every step, C every 2 steps: the cadence is irrelevant.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first_a = pool.submit(rh.run, cmd(a))
        first_b = pool.submit(
            rh.run_and_signal,
            cmd(b, "--config.checkpoint.every_steps=1"),
            b,
            kill_at,
            signal.SIGKILL,
        )
        first_c = pool.submit(
            rh.run_and_signal, cmd(c, "--config.checkpoint.every_steps=2"), c, 1, signal.SIGTERM
        )
        first_a, first_b, first_c = first_a.result(), first_b.result(), first_c.result()
    assert first_a.returncode == 0, first_a.stderr[-3000:]
    killed = base / "b_killed"  # the workdir as SIGKILL left it
    shutil.copytree(b, killed)
    c_stopped = {
        "summary": json.loads((c / "summary.json").read_text()),
        "latest": rh.checkpoint_steps(c),
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        second_b = pool.submit(rh.run, cmd(b, "--config.checkpoint.every_steps=1"))
        second_c = pool.submit(rh.run, cmd(c, "--config.checkpoint.every_steps=2"))
        second_b, second_c = second_b.result(), second_c.result()
    return dict(
        a=a,
        b=b,
        c=c,
        killed=killed,
        kill_at=kill_at,
        kill_seed=seed,
        first_b=first_b,
        first_c=first_c,
        second_b=second_b,
        second_c=second_c,
        c_stopped=c_stopped,
    )


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_0(runs):
    code, stderr = runs["first_c"]
    stopped = runs["c_stopped"]["summary"]
    assert code == 0, stderr[-3000:]
    step = stopped["step"]
    assert stopped["stopped_by"] == "SIGTERM"
    assert 1 <= step < rh.STEPS
    assert f"preempted by SIGTERM: saved a checkpoint at step {step}" in stderr
    assert "rerun the same command to resume" in stderr
    assert step in runs["c_stopped"]["latest"]  # saved at the step it stopped at


@pytest.mark.slow
def test_rerun_after_sigterm_resumes_and_matches_the_uninterrupted_run(runs):
    result = runs["second_c"]
    assert result.returncode == 0, result.stderr[-3000:]
    step = runs["c_stopped"]["summary"]["step"]
    assert f"resumed from step {step}" in result.stderr
    assert json.loads((runs["c"] / "summary.json").read_text())["step"] == rh.STEPS
    verdict = load_resume_check().compare(runs["a"], runs["c"])
    assert verdict["identical"], verdict["differing"][:10]


@pytest.mark.slow
def test_sigterm_at_an_epoch_end_still_evaluates_and_saves_that_epoch(
    tiny_encoder_dir, data_dir, tmp_path, monkeypatch
):
    """In process: SIGTERM during the last step of epoch 0. The epoch's eval and checkpoint
    (position: epoch 1, batch 0; with the val metrics) are done, then the run stops."""

    def sigterm_at_epoch_end(count, batch):
        if count == rh.STEPS_PER_EPOCH:
            os.kill(os.getpid(), signal.SIGTERM)  # the flag is read after this step
        return batch

    _hook_train_batches(monkeypatch, sigterm_at_epoch_end)
    config = rh.tiny_config(tiny_encoder_dir, data_dir, "--config.checkpoint.every_steps=1")
    previous = signal.getsignal(signal.SIGTERM)
    summary = loop.train_and_evaluate(config, tmp_path)
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == rh.STEPS_PER_EPOCH
    assert summary["val"] is not None
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is restored
    records = rh.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "val_macro_f1" in r] == [rh.STEPS_PER_EPOCH]
    checkpoints = Checkpoints(tmp_path, keep_best=2, metric="macro_f1")
    meta = checkpoints.read_meta("latest")
    assert max(checkpoints.latest.all_steps()) == rh.STEPS_PER_EPOCH
    assert meta["position"] == {"epoch": 1, "batch": 0} and meta["val"] is not None
    assert checkpoints.best.all_steps() == [rh.STEPS_PER_EPOCH]


@pytest.mark.slow
def test_sigkill_at_a_random_step_resumes_bitwise_identical(runs):
    kill_at = runs["kill_at"]
    # In every message: the draw to repeat (RELIABILITY_KILL_SEED=... pytest -k sigkill).
    draw = f"killed at step {kill_at}, RELIABILITY_KILL_SEED={runs['kill_seed']}"
    code, stderr = runs["first_b"]
    assert code == -signal.SIGKILL, f"{draw}: exit {code}\n{stderr[-3000:]}"
    killed_steps = rh.checkpoint_steps(runs["killed"])
    assert killed_steps and max(killed_steps) < rh.STEPS, f"{draw}: {killed_steps}"
    result = runs["second_b"]
    assert result.returncode == 0, f"{draw}\n{result.stderr[-3000:]}"
    resumed = re.search(r"resumed from step (\d+) \(epoch (\d+), batch (\d+)\)", result.stderr)
    assert resumed, f"{draw}\n{result.stderr[-3000:]}"
    step, epoch, batch = map(int, resumed.groups())
    assert step == max(killed_steps), draw
    # every_steps=1: the position is the step's, mid-epoch or at an epoch's end.
    assert epoch * rh.STEPS_PER_EPOCH + batch == step, draw
    # The steering check's script: parameters, Adam moments, MultiSteps state, step, rng.
    check = subprocess.run(
        [
            sys.executable,
            "scripts/resume_check.py",
            "--workdir-a",
            str(runs["a"]),
            "--workdir-b",
            str(runs["b"]),
        ],
        cwd=ROOT,
        env=rh.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, f"{draw}:\n{check.stdout}\n{check.stderr}"
    last_line = check.stdout.strip().splitlines()[-1]
    assert last_line.startswith(f"IDENTICAL: step {rh.STEPS}"), f"{draw}: {last_line}"
    # ...and the script does notice a difference: the killed workdir is behind.
    verdict = load_resume_check().compare(runs["a"], runs["killed"])
    assert not verdict["identical"] and verdict["differing"], draw


def test_the_kill_step_is_drawn_from_a_seed_that_can_be_given(monkeypatch):
    """The SIGKILL step is a function of RELIABILITY_KILL_SEED (or of a printed clock seed):
    a failing draw repeats; over many seeds every allowed step comes up, and no other."""
    assert [kill_step(seed) for seed in range(50)] == [kill_step(seed) for seed in range(50)]
    assert {kill_step(seed) for seed in range(500)} == set(range(2, rh.STEPS - 1))
    monkeypatch.setenv("RELIABILITY_KILL_SEED", "12345")
    assert kill_seed() == 12345
    monkeypatch.delenv("RELIABILITY_KILL_SEED")
    assert 0 <= kill_seed() < 2**32


@pytest.mark.slow
def test_same_seed_same_metrics_across_processes(runs):
    """Every train and val record of B (killed, resumed) and C (preempted, resumed) equals
    A's record of the same step: CPU runs with one seed are deterministic."""
    reference = {}
    for record in rh.read_jsonl(runs["a"] / "metrics.jsonl"):
        kind = "train" if "loss" in record else "val"
        reference[kind, record["step"]] = record
    assert len([k for k in reference if k[0] == "train"]) == rh.STEPS
    for name in ("b", "c"):
        records = rh.read_jsonl(runs[name] / "metrics.jsonl")
        # Every train step exactly once: a resume drops the records after its checkpoint.
        assert sorted(r["step"] for r in records if "loss" in r) == list(range(1, rh.STEPS + 1))
        for record in records:
            kind = "train" if "loss" in record else "val"
            expected = reference[kind, record["step"]]
            for key, value in record.items():
                if key not in TIMING_KEYS | {"compiles", "skipped_steps"}:
                    assert value == expected[key], (name, record["step"], key)


@pytest.mark.slow
def test_checkpoints_hold_no_pickle(runs):
    """Every checkpoint file is JSON, orbax/tensorstore data or a marker; none is a pickle."""
    for name in ("a", "b"):
        files = [p for p in (runs[name] / "checkpoints").rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert not path.read_bytes().startswith(PICKLE_MAGIC), path
            tensorstore = path.name == "manifest.ocdbt" or path.parent.name == "d"
            if not tensorstore and path.name != "commit_success.txt":
                json.loads(path.read_text())  # orbax metadata, our meta item, best metrics
        for cache in (runs[name] / "cache").glob("*.npz"):
            with np.load(cache, allow_pickle=False) as stored:
                [stored[key] for key in stored.files]  # object arrays would need pickle


# ---------------------------------------------------------------------------------------------
# Checkpoints: memory across saves, a crash during a save, corrupt and half-written checkpoints

# Trains with a save every step and prints the RSS (MB) right after each save (Linux /proc).
# With "fast" first, in the runtime of the command-line tools (jemalloc, no decay).
RSS_AFTER_SAVES = """
import json, sys
from cmhl_jax.runtime import ensure_fast_runtime
if sys.argv[4] == "fast":
    ensure_fast_runtime()
from conftest import tiny_config
from cmhl_jax import loop

def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

after, save = [], loop.Trainer.save
def recording_save(*args, **kwargs):
    save(*args, **kwargs)
    after.append(rss_mb())
loop.Trainer.save = recording_save
encoder, workdir, steps = sys.argv[1:4]
config = tiny_config(encoder, encoder + "/data", "checkpoint.every_steps=1", f"max_steps={steps}")
loop.train_and_evaluate(config, workdir)
print(json.dumps(after))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
@pytest.mark.parametrize("allocator", ["glibc", "jemalloc"])
def test_memory_does_not_grow_with_each_checkpoint_save(allocator, tmp_path):
    """A 110M model's training (the ablation command: jemalloc, no decay) grew by ~1.3 GB a
    save, to 24 GB: the allocator kept each save's freed host copy of the state. A 22M BERT
    (2 layers, hidden 512; state 252 MB: params and Adam moments) saved 24 times: RSS from
    save 2 to the highest of the last 10 grew by 102 MB (glibc) before `release_free_memory`
    after each save, 4 MB after (AMD EPYC Zen 4)."""
    if allocator == "jemalloc" and runtime.find_jemalloc() is None:
        pytest.skip("libjemalloc2 not installed")
    encoder = make_tiny_encoder(
        tmp_path / "encoder", hidden_size=512, intermediate_size=2048, num_attention_heads=4
    )
    make_emotion_data(encoder / "data", n_train=400, n_val=16)
    steps = 24
    mode = "fast" if allocator == "jemalloc" else "plain"
    dropped = ("LD_PRELOAD", "MALLOC_CONF", "CMHL_FAST_RUNTIME", runtime.REEXECUTED)
    environ = {k: v for k, v in rh.env().items() if k not in dropped}
    environ.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        CMHL_COMPILATION_CACHE=str(tmp_path / "xla_cache"),
    )
    script = tmp_path / "rss_after_saves.py"
    script.write_text(RSS_AFTER_SAVES)
    result = subprocess.run(
        [sys.executable, str(script), str(encoder), str(tmp_path / "run"), str(steps), mode],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads(result.stdout.splitlines()[-1])
    assert len(after) == steps  # the last one is the final evaluation's save
    state_mb = 3 * 22e6 * 4 / 2**20
    growth = max(after[-11:-1]) - after[1]
    assert growth < state_mb / 4, f"RSS after each save (MB): {after}"


def _state(value: float) -> dict:
    return {"w": np.full((3, 2), value, np.float32), "step": np.array(int(value), np.int32)}


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    checkpoints.save(1, _state(1), {"position": {"epoch": 0, "batch": 1}})
    checkpoints.save(2, _state(2), {"position": {"epoch": 0, "batch": 2}})
    latest = tmp_path / "checkpoints" / "latest"

    def crash(self, directory, *args, **kwargs):  # the state item is already being written
        assert any(".orbax-checkpoint-tmp" in p.name for p in latest.iterdir())
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "async_save", crash)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save(3, _state(3), {"position": {"epoch": 0, "batch": 3}})
    monkeypatch.undo()
    # The failed save removed its partial folder at once (a crash that kills the process
    # instead leaves it for the next start: remove_unfinished, below).
    assert sorted(p.name for p in latest.iterdir()) == ["1", "2"]
    (latest / "3.orbax-checkpoint-tmp-123").mkdir()  # as a killed process would leave it
    # A new process sees the two good ones, restores the newest, and can save step 3 again;
    # the trainer removes the unfinished save first (train_and_evaluate does).
    reopened = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    assert reopened.latest.all_steps() == [1, 2]
    assert [p.name for p in reopened.remove_unfinished()] == ["3.orbax-checkpoint-tmp-123"]
    state, meta = reopened.restore("latest", _state(0))
    assert float(state["w"][0, 0]) == 2.0 and meta["position"]["batch"] == 2
    reopened.save(3, _state(3), {"position": {"epoch": 0, "batch": 3}})
    assert sorted(p.name for p in latest.iterdir()) == ["2", "3"]  # 1 rotated out only now


@pytest.mark.parametrize("damage", ["truncated_manifest", "missing_state", "bad_meta_json"])
def test_corrupt_latest_falls_back_reports_and_is_moved_aside(tmp_path, caplog, damage):
    checkpoints = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    checkpoints.save(4, _state(4), {"position": {"epoch": 0, "batch": 4}})
    checkpoints.save(5, _state(5), {"position": {"epoch": 0, "batch": 5}})
    newest = tmp_path / "checkpoints" / "latest" / "5"
    if damage == "truncated_manifest":  # a file cut short
        manifest = newest / "state" / "manifest.ocdbt"
        manifest.write_bytes(manifest.read_bytes()[:7])
    elif damage == "missing_state":  # a half-copied folder
        shutil.rmtree(newest / "state")
    else:
        (newest / "meta" / "metadata").write_text('{"position": ')
    reopened = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    state, meta = reopened.restore("latest", _state(0), quarantine=True)
    assert float(state["w"][0, 0]) == 4.0 and meta["position"]["batch"] == 4
    assert f"{newest}" in caplog.text and "trying an older one" in caplog.text
    assert not newest.exists() and (newest.parent / "5.corrupt").is_dir()
    assert reopened.latest.all_steps() == [4]
    reopened.save(5, _state(5), {"position": {"epoch": 0, "batch": 5}})  # step 5 again
    assert Checkpoints(tmp_path, keep_best=1, metric="macro_f1").latest.all_steps() == [4, 5]


def test_no_usable_checkpoint_moves_nothing(tmp_path):
    """When nothing restores (e.g. a target of another structure), nothing is moved aside."""
    checkpoints = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    checkpoints.save(1, _state(1), {"position": {}})
    with pytest.raises(FileNotFoundError, match="no usable checkpoint"):
        checkpoints.restore("latest", {"other": np.zeros(2, np.float32)}, quarantine=True)
    assert checkpoints.latest.all_steps() == [1]


# ---------------------------------------------------------------------------------------------
# The NaN guard (in process: a NaN injected into one data batch)


def _hook_train_batches(monkeypatch, hook) -> None:
    """Pass the n-th training batch of the run (n from 1) through `hook(n, batch)`: batches of
    plans made by `EpochPlan.build`; evaluation batches go by untouched and uncounted."""
    build, batches = data_lib.EpochPlan.build, data_lib.EpochPlan.batches
    training, count = weakref.WeakSet(), [0]

    def tracked_build(*args, **kwargs):
        plan = build(*args, **kwargs)
        training.add(plan)
        return plan

    def hooked_batches(self, **kwargs):
        for batch in batches(self, **kwargs):
            if self in training:
                count[0] += 1
                batch = hook(count[0], batch)
            yield batch

    monkeypatch.setattr(data_lib.EpochPlan, "build", tracked_build)
    monkeypatch.setattr(data_lib.EpochPlan, "batches", hooked_batches)


def _poison_batch(monkeypatch, at_step: int) -> None:
    """The `at_step`-th training batch of the run gets a NaN text weight."""

    def poison(count, batch):
        if count == at_step:
            batch = dict(batch, text_mask=batch["text_mask"].copy())
            batch["text_mask"][0, 0] = np.nan
        return batch

    _hook_train_batches(monkeypatch, poison)


@pytest.mark.slow
def test_nan_stops_naming_the_step_and_term_and_keeps_checkpoints(
    tiny_encoder_dir, data_dir, tmp_path, monkeypatch
):
    _poison_batch(monkeypatch, at_step=3)
    config = rh.tiny_config(
        tiny_encoder_dir,
        data_dir,
        "--config.log_every=50",  # not logged yet: the check before the save catches it
        "--config.checkpoint.every_steps=2",
    )
    with pytest.raises(
        loop.NonFiniteLossError,
        match=r"non-finite loss at step 3 \(terms: loss, ce_emotion, .*grad_norm",
    ):
        loop.train_and_evaluate(config, tmp_path)
    checkpoints = Checkpoints(tmp_path, keep_best=1, metric="macro_f1")
    assert checkpoints.latest.all_steps() == [2]  # nothing was saved after the bad step
    step, state = checkpoints.read_arrays("latest")
    assert step == 2 and int(state["step"]) == 2
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(state["params"]))


@pytest.mark.slow
def test_skip_nonfinite_skips_and_counts(tiny_encoder_dir, data_dir, tmp_path, monkeypatch):
    _poison_batch(monkeypatch, at_step=2)
    config = rh.tiny_config(
        tiny_encoder_dir, data_dir, "--config.skip_nonfinite=true", "--config.max_steps=4"
    )
    summary = loop.train_and_evaluate(config, tmp_path)
    assert summary["step"] == 4 and summary["skipped_steps"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["skipped_steps"] == 1
    records = [r for r in rh.read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["nonfinite"] for r in records] == [0.0, 1.0, 0.0, 0.0]
    assert records[-1]["skipped_steps"] == 1


@pytest.mark.parametrize("accum_steps", [1, 3])
def test_guarded_update_is_the_plain_update_or_nothing_and_copies_no_moments(accum_steps):
    """Finite: bitwise optax's AdamW step. Non-finite loss or gradient: params and optimizer
    state unchanged. Without accumulation, compiled with the state donated, no parameter-sized
    buffer is copied (a `where` between the new and old trees made XLA copy every Adam moment
    first; optax.MultiSteps still selects between its own branches, so accumulation copies)."""
    import jax.numpy as jnp
    import optax

    from cmhl_jax.step import guarded_update, make_optimizer

    optim = load_config("configs/default.py").optim
    optim.accum_steps = accum_steps
    tx, _ = make_optimizer(optim, total_updates=10)
    params = {"kernel": jnp.linspace(-1.0, 1.0, 64 * 32).reshape(64, 32), "bias": jnp.ones(32)}
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda p: 0.1 * jnp.cos(p), params)
    updates, want_state = tx.update(grads, opt_state, params)
    want = (optax.apply_updates(params, updates), want_state)
    got = guarded_update(tx, params, opt_state, grads, jnp.float32(1.5))
    assert bool(got[3]) and float(got[2]) == pytest.approx(float(optax.tree.norm(grads)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, got[:2], want)
    bad_grads = dict(grads, bias=grads["bias"].at[3].set(jnp.nan))
    for loss, g in ((jnp.float32(jnp.inf), grads), (jnp.float32(1.5), bad_grads)):
        new_params, new_state, _, finite = guarded_update(tx, params, opt_state, g, loss)
        assert not bool(finite)
        jax.tree_util.tree_map(
            np.testing.assert_array_equal, (new_params, new_state), (params, opt_state)
        )
    if accum_steps == 1:

        def step(params, opt_state, grads):
            return guarded_update(tx, params, opt_state, grads, jnp.float32(1.5))[:2]

        step = jax.jit(step, donate_argnums=(0, 1))
        hlo = step.lower(params, opt_state, grads).compile().as_text()
        assert not re.findall(r"f32\[(?:64,32|32)\]\S* copy\(", hlo)


# ---------------------------------------------------------------------------------------------
# The workdir: unwritable or full, reported before the data is read


def test_unwritable_workdir_is_reported_before_the_model_loads(
    tiny_encoder_dir, data_dir, tmp_path, monkeypatch
):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse like a read-only mount would
        from etils import epath

        path_class = type(epath.Path(readonly))  # workdirs are epath paths
        original = path_class.write_text

        def write_text(self, *args, **kwargs):
            if str(self).startswith(str(readonly) + os.sep):
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(path_class, "write_text", write_text)
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: pytest.fail("model loaded"))
    config = rh.tiny_config(tiny_encoder_dir, data_dir)
    with pytest.raises(PermissionError, match=r"workdir .*readonly/run is not writable"):
        loop.train_and_evaluate(config, readonly / "run")


def test_full_disk_is_reported_before_tokenisation(
    tiny_encoder_dir, data_dir, tmp_path, monkeypatch
):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(loop.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    monkeypatch.setattr(data_lib, "tokenize_split", lambda *a, **k: pytest.fail("tokenised"))
    config = rh.tiny_config(tiny_encoder_dir, data_dir)
    with pytest.raises(OSError, match=r"0 MiB free, a checkpoint needs about \d+ MiB"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------
# Configs and command lines


def _default_config():
    return load_config(ROOT / "configs" / "default.py")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lr=0"], "optim.lr must be > 0"),
        (["optim.lr=-1e-5"], "optim.lr must be > 0"),
        (["loss.alpha=-0.5"], "loss.alpha must be >= 0"),
        (["loss.lam=-1"], "loss.lam must be >= 0"),
        (["data.buckets=(64, 32, 128)"], "data.buckets must be sorted"),
        (["data.max_length=256"], "must cover data.max_length=256"),
        (["log_every=0"], "log_every must be >= 1"),
        (["checkpoint.every_steps=-1"], "checkpoint.every_steps must be >= 0"),
        (["batch_size=0"], "batch_size must be >= 1"),
        (["optim.warmup_frac=1.5"], "optim.warmup_frac must be in [0, 1)"),
        (["model.dtype=float16"], "model.dtype must be float32 or bfloat16"),
        (
            ["model.dtype=bfloat16", "model.matmul_dtype=bfloat16"],
            "model.matmul_dtype must be float32, or bfloat16 with model.dtype=float32",
        ),
    ],
)
def test_config_ranges_are_checked(overrides, message):
    config = override(ROOT / "configs" / "default.py", overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)


def test_config_types_are_checked_and_all_problems_listed():
    """Types are ml_collections': a field keeps its default's type (a config file or code
    assigning another type fails, an override is parsed as that type); the meaning checks
    list every problem, NaN included."""
    config = _default_config()
    with pytest.raises(TypeError):
        config.optim.lr = "fast"
    with pytest.raises(TypeError):
        config.batch_size = 8.5
    with pytest.raises(ConfigError, match="optim.lr"):
        override(ROOT / "configs" / "default.py", ["optim.lr=fast"])
    config.loss.beta = float("nan")
    config.optim.lr = -1.0
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    text = str(error.value)
    assert "optim.lr must be > 0, got -1.0" in text
    assert "loss.beta must be >= 0, got nan" in text


def test_batch_size_must_divide_by_the_devices(monkeypatch):
    config = override(ROOT / "configs" / "default.py", ["parallel.mode=mesh", "batch_size=8"])
    monkeypatch.setattr(jax, "device_count", lambda: 3)
    with pytest.raises(ConfigError, match="batch_size=8 must divide by the 3 devices"):
        loop.check_batch_sizes(config)
    config.parallel.mode = "single"
    loop.check_batch_sizes(config)  # one device


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "Unknown command line flag 'bogus'"),
        (["--config.optim.lr=abc"], "could not convert string to float: 'abc'"),
        (["--config.nonexistent.key=1"], "unknown config key 'nonexistent.key'"),
        (["--config.loss.lamb=1"], "did you mean loss.lam"),
    ],
)
def test_train_cli_rejects_bad_arguments(argv, message, tmp_path, capsys):
    base = ["--config", str(ROOT / "configs/default.py"), "--workdir", str(tmp_path / "w")]
    with pytest.raises(SystemExit) as exit_info:
        _cli_main("train.py")(base + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 2


def _cli_main(script: str):
    return load_script(script).main


def _eval_main():
    return _cli_main("eval.py")


@pytest.mark.slow
def test_eval_cli_rejects_bad_checkpoints(runs, tmp_path, capsys):
    main = _eval_main()
    common = ["--data", "val", "--output", str(tmp_path / "out.json")]
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(runs["a"]), "--checkpoint", "newest", *common])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--checkpoint=newest" in err
    assert "--checkpoint must be best, latest or a step number" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(runs["a"]), "--checkpoint", "999", *common])
    assert exit_info.value.code == 1
    assert re.search(r"no checkpoint at step 999; available: \[6, 12\]", capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(tmp_path / "nothing"), "--checkpoint", "latest", *common])
    assert exit_info.value.code == 1
    assert re.search(r"config.json not found: is .* a training workdir", capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# Data files: arbitrary bytes never crash with anything but DataError


def _parse(tmp_path: Path, name: str, content: bytes, skip: bool = False):
    path = tmp_path / name
    path.write_bytes(content)
    return data_lib.read_examples(path, EMOTION_NAMES, skip_bad_lines=skip)


def _records_in(content: bytes) -> int:
    """Non-blank lines of a .txt file, decoded as the parser does."""
    lines = content.splitlines()
    decoded = [
        line.decode("utf-8-sig" if i == 0 else "utf-8", errors="replace")
        for i, line in enumerate(lines)
    ]
    return sum(1 for line in decoded if line.strip())


_fuzz = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_line_bytes = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda text, label: f"{text};{label}".encode(),
        st.text(max_size=20),
        st.sampled_from([*EMOTION_NAMES, "0", "5", "6", "-1", "joyy", ""]),
    ),
)
_file_bytes = st.lists(_line_bytes, max_size=8).map(lambda lines: b"\n".join(lines))


@_fuzz
@given(content=_file_bytes, suffix=st.sampled_from([".txt", ".csv"]))
def test_arbitrary_bytes_parse_or_raise_data_error(tmp_path, content, suffix):
    if suffix == ".csv":
        content = b"text,label\n" + content
    try:
        examples = _parse(tmp_path, "fuzz" + suffix, content)
    except data_lib.DataError as error:
        assert str(tmp_path / ("fuzz" + suffix)) in str(error)
        assert re.search(r"(line|:)\s?\d+", str(error))
    else:
        assert len(examples.texts) == len(examples.labels)
        assert all(text and text == text.strip() for text in examples.texts)
        assert all(0 <= label < len(EMOTION_NAMES) for label in examples.labels)


@_fuzz
@given(content=_file_bytes)
def test_skip_bad_lines_never_raises_and_accounts_for_every_line(tmp_path, content):
    examples = _parse(tmp_path, "skip.txt", content, skip=True)
    assert len(examples.texts) + examples.skipped == _records_in(content)


_good_line = st.builds(
    lambda words, label: f"{' '.join(words)};{label}",
    st.lists(st.sampled_from(["i", "feel", "so", "very", "today"]), min_size=1, max_size=5),
    st.sampled_from(EMOTION_NAMES),
)
_bad_lines = {
    b"no separator here": "no ';' separating text and label",
    b"text;jolly": "unknown label 'jolly'",
    b"text;9": "unknown label '9'",
    b"   ;joy": "empty text",
    b"bad \xff\xfe bytes;joy": "undecodable bytes (not UTF-8)",
}


@_fuzz
@given(
    good=st.lists(_good_line, min_size=1, max_size=6),
    bad=st.sampled_from(sorted(_bad_lines)),
    where=st.integers(0, 6),
)
def test_the_error_names_the_file_and_the_bad_line(tmp_path, good, bad, where):
    where = min(where, len(good))
    lines = [line.encode() for line in good]
    lines.insert(where, bad)
    path = tmp_path / "named.txt"
    with pytest.raises(data_lib.DataError) as error:
        _parse(tmp_path, path.name, b"\n".join(lines) + b"\n")
    assert str(error.value).startswith(f"{path}: 1 bad line(s)")
    assert f"line {where + 1}: {_bad_lines[bad]}" in str(error.value)


# ---------------------------------------------------------------------------------------------
# Safe loading: no pickle, no remote code, no shell. The source is linted by ruff (S rules
# and TID251 banned-api, pyproject.toml); here: a pickled torch file with code is refused.


def test_pickled_torch_weights_with_code_are_refused(tmp_path):
    """A pytorch_model.bin whose pickle would run code is refused (weights_only=True)."""
    torch = pytest.importorskip("torch")
    from cmhl_jax.encoder.params import read_state_dict

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"embeddings.word_embeddings.weight": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        read_state_dict(tmp_path)
    assert not marker.exists()
