"""Subprocess helpers for tests/test_reliability.py: tiny training runs, killed on cue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import tiny_config as preset_config
from conftest import tiny_train_args

ROOT = Path(__file__).resolve().parents[1]
# 48 train texts, batch 8 (the preset's, one length bucket): 6 steps an epoch, 2 epochs.
TRAIN_TEXTS, VAL_TEXTS, BATCH, EPOCHS = 48, 16, 8, 2
STEPS_PER_EPOCH = TRAIN_TEXTS // BATCH
STEPS = EPOCHS * STEPS_PER_EPOCH


def env() -> dict[str, str]:
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TQDM_DISABLE="1",
    )


def overrides(*extra: str) -> list[str]:
    """The reliability run's flags on top of the tiny preset (subprocesses and in-process)."""
    return [
        f"--config.num_epochs={EPOCHS}",
        "--config.max_steps=-1",  # whole epochs: the resume position crosses an epoch end
        "--config.optim.accum_steps=2",  # the MultiSteps state must resume too
        "--config.model.hidden_dropout_prob=0.1",  # dropout on: the rng must resume too
        "--config.model.head_dropout=0.1",
        "--config.parallel.mode=pmap",  # the default mode's state layout
        *extra,
    ]


def train_cmd(workdir: Path, encoder: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, *tiny_train_args(workdir, encoder, data, *overrides(*extra))]


def tiny_config(encoder: Path, data: Path, *extra: str):
    """The reliability run's config object, for `train_and_evaluate` in the test process."""
    return preset_config(encoder, data, *overrides(*extra))


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by SIGKILL
            pass
    return records


def last_train_step(workdir: Path) -> int:
    steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "loss" in r]
    return max(steps, default=0)


def run_and_signal(
    cmd: list[str], workdir: Path, at_step: int, sig: int, timeout: float = 240
) -> tuple[int, str]:
    """Starts `cmd`, sends `sig` once metrics.jsonl has a train record of step >= at_step,
    and returns (exit code, stderr)."""
    stderr_path = workdir.parent / f"{workdir.name}.{signal.Signals(sig).name}.stderr"
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=stderr, text=True
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and last_train_step(workdir) < at_step:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no train record of step {at_step} in {timeout}s")
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(sig)
            code = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, stderr_path.read_text()


def checkpoint_steps(workdir: Path, kind: str = "latest") -> list[int]:
    folder = workdir / "checkpoints" / kind
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
