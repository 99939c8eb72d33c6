"""TensorBoard event files next to metrics.jsonl (config.log.tensorboard)."""

from __future__ import annotations

import json

import pytest
import research_helpers as helpers

pytest.importorskip("tensorboardX")

from cmhl_jax import tensorboard  # noqa: E402


def test_training_writes_readable_events(tmp_path_factory):
    workdir = helpers.trained_workdir(tmp_path_factory.getbasetemp())  # log.tensorboard=true
    scalars = tensorboard.read_scalars(workdir / "tensorboard")
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "loss" in m]
    assert [step for step, _ in scalars["train/loss"]] == [m["step"] for m in train]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([m["loss"] for m in train])
    val = [m for m in metrics if "val_macro_f1" in m]
    assert scalars["val/macro_f1"] == [(val[0]["step"], pytest.approx(val[0]["val_macro_f1"]))]


def test_off_by_default(tmp_path):
    from cmhl_jax.config import load_config

    config = load_config(helpers.ROOT / "configs" / "default.py")
    assert config.log.tensorboard is False
    assert tensorboard.maybe_writer(config, tmp_path) is None
    metrics = tensorboard.MetricsFile(tmp_path / "metrics.jsonl", config)
    metrics.write(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    metrics.close()
    assert not (tmp_path / "tensorboard").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.0}
