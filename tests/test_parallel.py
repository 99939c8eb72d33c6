"""Data parallelism: pmap and mesh (jit + NamedSharding) train the same parameters as one device.

The comparison runs in a subprocess with 8 virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8) so that every other test keeps one
device. This file is also that subprocess's script:

    python tests/test_parallel.py ENCODER_DIR DATA_DIR {packed,unpacked} OUT.json
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses / a tiny training run

NUM_DEVICES = 8
NUM_STEPS = 3
BATCH_SIZE = 8  # global rows: one per device
ATOL = 1e-5  # max |param difference| after 3 steps at lr 1e-3 (observed ~1e-7)
ROOT = Path(__file__).resolve().parents[1]


def tiny_config(encoder_dir, data_dir, pack: bool):
    """The tiny preset (one bucket / one pack length of 32), deterministic (dropout off)."""
    from configs.tiny import get_config

    config = get_config()
    config.model.encoder = str(encoder_dir)
    config.data.local_dir = str(data_dir)
    config.model.hidden_dropout_prob = 0.0
    config.model.attention_probs_dropout_prob = 0.0
    config.model.head_dropout = 0.0
    config.data.pack = pack
    config.optim.warmup_frac = 0.0
    assert config.batch_size == BATCH_SIZE and config.data.max_texts_per_row == 4
    return config


def _train_split(config, encoder_dir):
    """(examples, tokenizer, token ids) of the config's train split."""
    from cmhl_jax import data as data_lib
    from cmhl_jax.encoder.hub import load_tokenizer
    from cmhl_jax.tasks import make_task

    labels = list(make_task(config).label_names)
    examples = data_lib.load_split(data_lib.split_spec(config.data, "train"), labels)
    tokenizer = load_tokenizer(encoder_dir)
    return examples, tokenizer, data_lib.tokenize_split(examples, tokenizer, config.data, None)


def _max_diff(a, b) -> float:
    """Max |a - b| over the leaves of two trees of the same layout (a checkpoint's raw tree has
    string keys where the live params have ints; both sort the same)."""
    import jax
    import numpy as np

    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y))))
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def _initial_params(config):
    """The parameters every run starts from (the model of `config`, seed 0)."""
    from cmhl_jax.model import build_model
    from cmhl_jax.tasks import make_task

    return build_model(config.model, make_task(config), seed=config.seed)[1]


def _train(config, workdir: Path) -> dict:
    """`train_and_evaluate` with a checkpoint after NUM_STEPS steps and one more step after it;
    returns the per-step losses and the raw checkpoint trees at NUM_STEPS and at the end."""
    from cmhl_jax.checkpoint import Checkpoints
    from cmhl_jax.loop import train_and_evaluate

    summary = train_and_evaluate(config, workdir)
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    checkpoints = Checkpoints(workdir, keep_best=1, metric="macro_f1")
    return {
        "summary": summary,
        "losses": [r["loss"] for r in records if "loss" in r],
        "mid": checkpoints.read_arrays(NUM_STEPS)[1],
        "end": checkpoints.read_arrays("latest")[1],
    }


@contextlib.contextmanager
def _recording_resume():
    """Records what a `train_and_evaluate` run inside the block starts from: the step and the
    host parameters `loop.restore_or_start` returns, and the step of its "resumed from step N"
    log line (None when it logs none)."""
    import logging
    import re

    import jax

    from cmhl_jax import loop

    restored = {"step": None, "params": None, "logged": None}
    original = loop.restore_or_start

    def recording(trainer, host_state):
        host_state, run = original(trainer, host_state)
        restored.update(step=int(run.step), params=jax.device_get(host_state.params))
        return host_state, run

    class Handler(logging.Handler):
        def emit(self, record):
            found = re.match(r"resumed from step (\d+)", record.getMessage())
            if found:
                restored["logged"] = int(found.group(1))

    logger, handler = logging.getLogger("cmhl_jax"), Handler(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    loop.restore_or_start = recording
    try:
        yield restored
    finally:
        loop.restore_or_start = original
        logger.removeHandler(handler)
        logger.setLevel(level)


def worker(encoder_dir: str, data_dir: str, packing: str, out: str) -> None:
    """Trains with `train_and_evaluate` in single, pmap and mesh mode (NUM_STEPS steps, a
    checkpoint, one more step) and writes the max |diff| of each mode to single; then resumes a
    copy of the pmap run from its NUM_STEPS checkpoint in mesh mode."""
    import shutil

    import jax

    from cmhl_jax import data as data_lib

    assert jax.device_count() == NUM_DEVICES, jax.devices()
    out_dir = Path(out).with_suffix("")
    config = tiny_config(encoder_dir, data_dir, pack=packing == "packed")
    config.max_steps = NUM_STEPS + 1
    config.checkpoint.every_steps = NUM_STEPS
    runs = {}
    for mode in ("single", "pmap", "mesh"):
        config.parallel.mode = mode
        runs[mode] = _train(config, out_dir / mode)
        assert runs[mode]["summary"]["compiles"] == 2  # one train and one predict shape

    # Resume across modes: the pmap run's NUM_STEPS checkpoint, resumed in mesh mode.
    resumed_dir = out_dir / "pmap_resumed_in_mesh"
    shutil.copytree(out_dir / "pmap", resumed_dir)
    for kind in ("latest", "best"):
        shutil.rmtree(resumed_dir / "checkpoints" / kind / str(NUM_STEPS + 1), ignore_errors=True)
    config.parallel.mode = "mesh"
    with _recording_resume() as restored:
        resumed = _train(config, resumed_dir)
    initial = _initial_params(config)

    # The batches' text counts per device (8 devices, one row each).
    examples, tokenizer, token_ids = _train_split(config, encoder_dir)
    plan = data_lib.EpochPlan.build(
        token_ids,
        examples.labels,
        options=data_lib.BatchOptions.from_config(config.data),
        batch_size=BATCH_SIZE,
        seed=0,
        epoch=0,
    )
    batches = list(plan.batches(pad_id=int(tokenizer.pad_token_id)))[:NUM_STEPS]
    report = {
        "texts_per_device": [b["text_mask"].sum(1).tolist() for b in batches],
        "texts_per_row": int(batches[0]["text_mask"].shape[1]),
        "resume_pmap_to_mesh": _max_diff(resumed["end"]["params"], runs["pmap"]["end"]["params"]),
        "resumed_end_step": resumed["summary"]["step"],
        # What the resumed run started from: the step and parameters restore_or_start gave
        # the loop, and the step its log line names.
        "resumed_from": restored["step"],
        "resumed_from_logged": restored["logged"],
        "restored_vs_checkpoint": _max_diff(restored["params"], runs["pmap"]["mid"]["params"]),
        "restored_vs_initial": _max_diff(restored["params"], initial),
        "moved": _max_diff(runs["single"]["mid"]["params"], initial),
        "losses": {m: r["losses"] for m, r in runs.items()},
        "steps": {m: r["summary"]["step"] for m, r in runs.items()},
    }
    for mode in ("pmap", "mesh"):  # the largest difference at the checkpoint and at the end
        report[mode] = {
            key: max(_max_diff(runs[mode][w][key], runs["single"][w][key]) for w in ("mid", "end"))
            for key in ("params", "opt_state")
        }
    Path(out).write_text(json.dumps(report, indent=2))


# ------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def parallel_reports(tiny_encoder_dir, tiny_emotion_data, tmp_path_factory):
    """Runs the unpacked and the packed comparison as subprocesses, one after the other."""
    out_dir = tmp_path_factory.mktemp("parallel")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
        # A loaded 2-core machine can starve a virtual device past XLA's 40 s default.
        + " --xla_cpu_collective_call_terminate_timeout_seconds=900"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    reports = {}
    # One worker at a time: two 8-device workers on 2 cores starve each other's collectives.
    for packing in ("unpacked", "packed"):
        cmd = [
            sys.executable,
            __file__,
            str(tiny_encoder_dir),
            str(tiny_emotion_data),
            packing,
            str(out_dir / f"{packing}.json"),
        ]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            output, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            pytest.fail(f"{packing} parallel worker timed out:\n{output[-4000:]}")
        assert proc.returncode == 0, f"{packing} worker failed:\n{output[-4000:]}"
        reports[packing] = json.loads((out_dir / f"{packing}.json").read_text())
    return reports


@pytest.mark.parametrize("packing", ["unpacked", "packed"])
@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_data_parallel_matches_single_device(parallel_reports, mode, packing):
    report = parallel_reports[packing]
    steps = NUM_STEPS + 1
    assert report["steps"] == {"single": steps, "pmap": steps, "mesh": steps}
    assert report["texts_per_row"] == (4 if packing == "packed" else 1)
    assert report["moved"] > 1e-3  # the steps really changed the parameters
    assert report[mode]["params"] <= ATOL, report
    assert report[mode]["opt_state"] <= ATOL, report
    for single, other in zip(report["losses"]["single"], report["losses"][mode], strict=True):
        assert other == pytest.approx(single, abs=1e-5)


def test_packed_devices_hold_unequal_text_counts(parallel_reports):
    """Packed rows hold 1 to 4 texts, so devices hold unequal text counts: the loss must be
    normalised by the global count (pmean of counts), not the local one."""
    counts = parallel_reports["packed"]["texts_per_device"]
    assert any(len(set(batch)) > 1 for batch in counts), counts
    assert all(set(batch) == {1.0} for batch in parallel_reports["unpacked"]["texts_per_device"])


def test_a_batch_of_fewer_texts_than_devices_gets_the_single_device_update(
    tiny_encoder_dir, tiny_emotion_data
):
    """4 devices (vmap with an axis name: the same collectives as pmap), one text among their 4
    rows: each device's loss must divide by 1/4, not by max(1/4, 1), which scaled the loss and
    gradient of such a batch (an epoch's last, partial one) down to a quarter."""
    import functools

    import jax
    import numpy as np

    from cmhl_jax import data as data_lib
    from cmhl_jax.model import build_model
    from cmhl_jax.step import init_train_state, make_optimizer, train_step
    from cmhl_jax.tasks import make_task

    config = tiny_config(tiny_encoder_dir, tiny_emotion_data, pack=False)
    model_def, params, _ = build_model(config.model, make_task(config), seed=0)
    tx, schedule = make_optimizer(config.optim, total_updates=10)
    state = init_train_state(params, tx, 0)
    examples, tokenizer, token_ids = _train_split(config, tiny_encoder_dir)
    options = data_lib.BatchOptions.from_config(config.data)
    pad_id = int(tokenizer.pad_token_id)
    batches = data_lib.eval_batches(
        token_ids, examples.labels, options=options, batch_size=4, pad_id=pad_id
    )
    full, batch = (next(batches) for _ in range(2))
    for b in (full, batch):
        b.pop("example_index")
    batch["text_mask"] = np.array([[0.0], [1.0], [0.0], [0.0]], np.float32)
    step_fn = functools.partial(
        train_step, model_def=model_def, tx=tx, schedule=schedule, accum_steps=1
    )
    step = jax.jit(step_fn)
    state, _ = step(state, full)  # Adam moments from a full batch: now the gradient's scale counts
    one, one_metrics = step(state, batch)
    per_device = jax.tree_util.tree_map(lambda x: x.reshape(4, 1, *x.shape[1:]), batch)
    devices = jax.vmap(
        functools.partial(step_fn, axis_name="devices"), in_axes=(None, 0), axis_name="devices"
    )
    four, four_metrics = jax.jit(devices)(state, per_device)
    assert float(four_metrics["texts"][0]) == 1.0
    assert float(four_metrics["loss"][0]) == pytest.approx(float(one_metrics["loss"]), rel=1e-5)
    moved = jax.tree_util.tree_map(lambda new, old: new - old, one.params, state.params)
    for got, want in zip(
        jax.tree_util.tree_leaves(four.params), jax.tree_util.tree_leaves(one.params), strict=True
    ):
        np.testing.assert_allclose(got[0], want, atol=1e-6)
    assert max(float(np.abs(m).max()) for m in jax.tree_util.tree_leaves(moved)) > 1e-4


@pytest.mark.parametrize("packing", ["unpacked", "packed"])
def test_checkpoint_from_pmap_resumes_in_mesh_mode(parallel_reports, packing):
    """The pmap run's checkpoint after NUM_STEPS steps, resumed by `train_and_evaluate` in mesh
    mode: one more step there gives the parameters of one more step in pmap mode.

    A resume, not a retrain (which in mesh mode would end on the same parameters): the run
    started from step NUM_STEPS, said so, with the checkpoint's parameters (bitwise), which are
    not the initial ones a fresh start has; and it ended one step later."""
    report = parallel_reports[packing]
    assert report["resumed_from"] == NUM_STEPS, report
    assert report["resumed_from_logged"] == NUM_STEPS, report
    assert report["restored_vs_checkpoint"] == 0.0, report
    assert report["restored_vs_initial"] > 1e-3, report
    assert report["resumed_end_step"] == NUM_STEPS + 1, report
    assert report["resume_pmap_to_mesh"] <= ATOL, report


if __name__ == "__main__":
    worker(*sys.argv[1:])
