"""TensorBoard event files next to metrics.jsonl (config.log.tensorboard)."""

from __future__ import annotations

import json

import pytest
import research_helpers as helpers

from cmhl_jax.metrics_log import MetricsWriter, read_scalars


@pytest.mark.slow
def test_training_writes_readable_events(tmp_path_factory):
    workdir = helpers.trained_workdir(tmp_path_factory.getbasetemp())  # log.tensorboard=true
    scalars = read_scalars(workdir / "tensorboard")
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
    metrics = MetricsWriter(tmp_path, config)
    metrics.write({"step": 1, "loss": 2.0})
    metrics.close()
    assert not (tmp_path / "tensorboard").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.0}


def test_resume_drops_later_records_and_purges_tensorboard(tmp_path):
    """A run resumed from the checkpoint at step 4 after logging up to step 6: steps 5 and 6
    are dropped from metrics.jsonl and hidden in TensorBoard, so every step appears once."""
    from ml_collections import ConfigDict

    config = ConfigDict({"log": {"tensorboard": True}})
    first = MetricsWriter(tmp_path, config)
    for step in range(1, 7):
        first.write({"step": step, "loss": float(step)})
    first.write({"step": 4, "epoch": 0, "val_macro_f1": 0.5})
    first.close()
    resumed = MetricsWriter(tmp_path, config, resume_step=4)
    assert resumed.dropped == 2
    for step in range(5, 8):
        resumed.write({"step": step, "loss": 10.0 + step})
    resumed.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in lines if "loss" in r]
    assert train == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 15.0), (6, 16.0), (7, 17.0)]
    assert [r["step"] for r in lines if "val_macro_f1" in r] == [4]
    assert read_scalars(tmp_path / "tensorboard")["train/loss"] == train
