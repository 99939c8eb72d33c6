"""Plots are written as non-empty PNGs; eval.py --plots writes them next to its JSON."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import research_helpers as helpers

pytest.importorskip("matplotlib")

from cmhl_jax import plots  # noqa: E402
from cmhl_jax.affect import build_affect_tables, default_affect_config  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
NAMES = list(helpers.EMOTIONS)


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 2000


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 300)
    logits = rng.normal(size=(300, 6)) + 3 * np.eye(6)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probs, labels


def test_confusion_reliability_coactivation(tmp_path, synthetic):
    probs, labels = synthetic
    from cmhl_jax.metrics import confusion_matrix

    matrix = confusion_matrix(labels, probs.argmax(-1), 6)
    assert _is_png(plots.plot_confusion_matrix(matrix, NAMES, tmp_path / "c.png"))
    assert _is_png(plots.plot_reliability(probs, labels, tmp_path / "r.png"))
    co = plots.coactivation_matrix(probs)
    assert co.shape == (6, 6) and np.allclose(co, co.T)
    assert co.sum() == pytest.approx(1.0)  # sum_ij E[p_i p_j] = E[(sum p)^2]
    assert _is_png(plots.plot_coactivation(co, NAMES, tmp_path / "co.png"))
    tables = build_affect_tables(default_affect_config())
    share = plots.hinge_active_share(probs, tables.tau, tables.pair_mask, "sum")
    assert share.shape == (6, 6) and (share[tables.pair_mask == 0] == 0).all()
    assert ((share >= 0) & (share <= 1)).all()


def test_reliability_bins_agree_with_ece(synthetic):
    from cmhl_jax.metrics import expected_calibration_error

    probs, labels = synthetic
    bins = plots.reliability_bins(probs, labels, 10)
    n = bins["count"].sum()
    gap = np.nansum(bins["count"] / n * np.abs(bins["accuracy"] - bins["confidence"]))
    assert gap == pytest.approx(expected_calibration_error(probs, labels, 10))


def test_gate_weights(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    a1 = np.clip(0.3 + 0.1 * labels + rng.normal(0, 0.05, 200), 0, 1)
    gates = np.stack([a1, 1 - a1], 1)
    names = ["depression", "SuicideWatch", "Anxiety", "bipolar", "offmychest"]
    assert _is_png(plots.plot_gate_weights(gates, labels, names, tmp_path / "g.png"))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plots.plot_gate_weights(gates[:, :1], labels, names, tmp_path / "bad.png")


def test_ablation_plot(tmp_path):
    rows = [
        dict(arm="ce_only", accuracy_mean=0.9, accuracy_sd=0.01, macro_f1_mean=0.85,
             macro_f1_sd=float("nan")),
        dict(arm="cmhl_sum", accuracy_mean=0.91, accuracy_sd=0.01, macro_f1_mean=0.86,
             macro_f1_sd=0.02, macro_f1_diff=0.01, macro_f1_low=-0.002, macro_f1_high=0.02),
    ]  # fmt: skip
    assert _is_png(plots.plot_ablation(rows, tmp_path / "a.png"))


def test_eval_cli_plots(tmp_path_factory):
    workdir = helpers.trained_workdir(tmp_path_factory.getbasetemp())
    assert _is_png(plots.plot_training_curves(workdir / "metrics.jsonl", workdir / "curves.png"))
    spec = importlib.util.spec_from_file_location("eval_cli", helpers.ROOT / "eval.py")
    eval_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_cli)
    out = tmp_path_factory.mktemp("eval") / "val.json"
    data = helpers.emotion_data(tmp_path_factory.getbasetemp()) / "val.txt"
    eval_cli.main(["--workdir", str(workdir), "--data", str(data), "--output", str(out), "--plots"])
    report = json.loads(out.read_text())
    written = sorted(p.rsplit(".", 2)[-2] for p in report["plots"])
    assert written == ["coactivation", "confusion", "curves", "hinge", "reliability"]
    for name in written:
        assert _is_png(out.parent / f"val.{name}.png")
