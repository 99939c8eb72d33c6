"""Multi-process (multi-host) training on localhost: two `train.py` processes with two virtual
CPU devices each, joined by `jax.distributed.initialize` (127.0.0.1 only) with gloo CPU
collectives, train the same parameters as one process on one device with the same global
batch. Both data-parallel modes are run: mesh (jit + NamedSharding) and pmap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import reserved_port, tiny_train_args

pytestmark = pytest.mark.slow  # subprocesses / a tiny training run

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3
ATOL = 1e-5  # max |param difference| after 3 steps at lr 1e-3
TIMEOUT = 300


def common_args(workdir: Path, encoder: Path, data: Path) -> list[str]:
    """The tiny preset (batch 8, one batch shape), deterministic (dropout off), 3 steps."""
    return tiny_train_args(
        workdir,
        encoder,
        data,
        "model.hidden_dropout_prob=0.0",
        "model.attention_probs_dropout_prob=0.0",
        "model.head_dropout=0.0",
        "optim.warmup_frac=0.0",
        f"max_steps={STEPS}",
    )


def launch(args: list[str], devices: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="0")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices}"
        # A loaded 2-core machine can starve a virtual device past XLA's 40 s default.
        + " --xla_cpu_collective_call_terminate_timeout_seconds=900"
    ).strip()
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_all(procs: dict[str, tuple[subprocess.Popen, Path]]) -> dict[str, tuple[int, str]]:
    """Return codes and output of every process; kills all after TIMEOUT seconds in all."""
    deadline = time.monotonic() + TIMEOUT
    results = {}
    for name, (proc, log) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other, _ in procs.values():
                other.kill()
            proc.wait()
        results[name] = (proc.returncode, log.read_text())
    return results


@pytest.fixture(scope="module")
def runs(tiny_encoder_dir, tiny_emotion_data, tmp_path_factory):
    """The reference (1 process, 1 device) and, per mode, 2 processes x 2 devices, all
    started at once."""
    base = tmp_path_factory.mktemp("multihost")
    procs = {}
    ref = common_args(base / "reference", tiny_encoder_dir, tiny_emotion_data)
    procs["reference"] = (
        launch([*ref, "--config.parallel.mode=single"], 1, base / "reference.log"),
        base / "reference.log",
    )
    # The coordinators' ports are held until every process is gone.
    with reserved_port() as mesh_port, reserved_port() as pmap_port:
        for mode, port in (("mesh", mesh_port), ("pmap", pmap_port)):
            for process_id in range(2):
                name = f"{mode}{process_id}"
                args = [
                    *common_args(base / mode, tiny_encoder_dir, tiny_emotion_data),
                    f"--config.parallel.mode={mode}",
                    "--config.parallel.distributed=true",
                    f"--config.parallel.coordinator_address=127.0.0.1:{port}",
                    "--config.parallel.num_processes=2",
                    f"--config.parallel.process_id={process_id}",
                    "--config.parallel.cpu_collectives=gloo",
                ]
                procs[name] = (launch(args, 2, base / f"{name}.log"), base / f"{name}.log")
        results = wait_all(procs)
    return base, results


def final_params(workdir: Path, encoder: Path):
    from cmhl_jax.checkpoint import Checkpoints
    from cmhl_jax.evaluate import load_config_json
    from cmhl_jax.model import build_model
    from cmhl_jax.step import init_train_state, make_optimizer
    from cmhl_jax.tasks import make_task

    config = load_config_json(workdir)
    model_def, params, _ = build_model(config.model, make_task(config), seed=config.seed)
    tx, _ = make_optimizer(config.optim, 1)
    target = jax.device_get(init_train_state(params, tx, config.seed))
    state, meta = Checkpoints(workdir, keep_best=1, metric="macro_f1").restore("latest", target)
    return state, meta, params


def max_diff(a, b) -> float:
    diffs = jax.tree_util.tree_map(
        lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y)))), a, b
    )
    return max(jax.tree_util.tree_leaves(diffs))


def check_mode(runs, mode, encoder):
    base, results = runs
    code, output = results["reference"]
    assert code == 0, output[-5000:]
    for process_id in range(2):
        code, output = results[f"{mode}{process_id}"]
        assert code == 0, f"{mode} process {process_id} failed:\n{output[-5000:]}"
    reference, ref_meta, initial = final_params(base / "reference", encoder)
    state, meta, _ = final_params(base / mode, encoder)
    assert int(reference.step) == int(state.step) == STEPS
    assert max_diff(reference.params, initial) > 1e-4  # the steps changed the parameters
    assert max_diff(state.params, reference.params) <= ATOL
    # The validation pass (predict on 2 processes, gathered) agrees too.
    for key in ("accuracy", "macro_f1", "valence_accuracy"):
        assert meta["val"][key] == pytest.approx(ref_meta["val"][key], abs=1e-9)
    # Only process 0 writes the logs; it logged the 3 steps, with the global text count.
    records = [json.loads(x) for x in (base / mode / "metrics.jsonl").read_text().splitlines()]
    ref_records = [
        json.loads(x) for x in (base / "reference" / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if "loss" in r]
    ref_train = [r for r in ref_records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for got, want in zip(train, ref_train, strict=True):
        assert got["texts"] == want["texts"]
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)


def test_multihost_mesh_matches_one_device(runs, tiny_encoder_dir):
    check_mode(runs, "mesh", tiny_encoder_dir)


def test_multihost_pmap_matches_one_device(runs, tiny_encoder_dir):
    check_mode(runs, "pmap", tiny_encoder_dir)
