"""Plots draw the data they are given (checked on the matplotlib figures) and are written as
non-empty PNGs; eval.py --plots writes them next to its JSON."""

from __future__ import annotations

import json

import matplotlib  # the `plots` extra; part of the `test` extra
import numpy as np
import pytest
import research_helpers as helpers
from conftest import load_script

from cmhl_jax import plots
from cmhl_jax.tasks.emotion.affect import build_affect_tables, default_affect_config

assert matplotlib.__version__

PNG = b"\x89PNG\r\n\x1a\n"
NAMES = list(helpers.EMOTIONS)


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 2000


@pytest.fixture
def drawn(monkeypatch):
    """{PNG file name: the matplotlib figure saved to it} of every plot the test writes."""
    figures = {}
    save = plots._save

    def keep(fig, path):
        out = save(fig, path)  # closes the figure; its artists stay readable
        figures[out.name] = fig
        return out

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _ticks(ax, axis="x"):
    return [t.get_text() for t in getattr(ax, f"get_{axis}ticklabels")()]


def _bar_heights(ax):
    return np.array([patch.get_height() for patch in ax.patches])


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 300)
    logits = rng.normal(size=(300, 6)) + 3 * np.eye(6)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probs, labels


def test_confusion_reliability_coactivation(tmp_path, synthetic, drawn):
    probs, labels = synthetic
    from cmhl_jax.metrics import confusion_matrix, expected_calibration_error

    matrix = confusion_matrix(labels, probs.argmax(-1), 6)
    assert _is_png(plots.plot_confusion_matrix(matrix, NAMES, tmp_path / "c.png"))
    # Colours: row-normalised (recall); cells: the counts; axes: the class names.
    (ax, _colorbar) = drawn["c.png"].axes
    recall = matrix / matrix.sum(1, keepdims=True)
    np.testing.assert_allclose(ax.images[0].get_array(), recall)
    assert _texts(ax) == [str(int(v)) for v in np.asarray(matrix).ravel()]
    assert _ticks(ax, "x") == NAMES and _ticks(ax, "y") == NAMES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")

    assert _is_png(plots.plot_reliability(probs, labels, tmp_path / "r.png", bins=10))
    ax, ax_count = drawn["r.png"].axes
    bins = plots.reliability_bins(probs, labels, 10)
    np.testing.assert_allclose(_bar_heights(ax), np.nan_to_num(bins["accuracy"]))
    np.testing.assert_allclose(_bar_heights(ax_count), bins["count"])
    assert _bar_heights(ax_count).sum() == len(labels)
    diagonal = ax.lines[0]
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]
    ece = expected_calibration_error(probs, labels, 10)
    assert ax.get_title() == f"reliability (ECE {ece:.3f})"

    co = plots.coactivation_matrix(probs)
    assert co.shape == (6, 6) and np.allclose(co, co.T)
    assert co.sum() == pytest.approx(1.0)  # sum_ij E[p_i p_j] = E[(sum p)^2]
    assert _is_png(plots.plot_coactivation(co, NAMES, tmp_path / "co.png"))
    ax = drawn["co.png"].axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), co)
    assert _texts(ax) == [f"{v:.3f}" for v in co.ravel()]
    assert _ticks(ax, "x") == NAMES and ax.get_title() == "mean p_i * p_j"
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


def test_gate_weights(tmp_path, drawn):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    a1 = np.clip(0.3 + 0.1 * labels + rng.normal(0, 0.05, 200), 0, 1)
    gates = np.stack([a1, 1 - a1], 1)
    names = ["depression", "SuicideWatch", "Anxiety", "bipolar", "offmychest"]
    keep = labels != 2  # a class without texts gets no box
    path = plots.plot_gate_weights(gates[keep], labels[keep], names, tmp_path / "g.png")
    assert _is_png(path)
    ax_hist, ax_box = drawn["g.png"].axes
    counts, _ = np.histogram(a1[keep], bins=30, range=(0, 1))
    np.testing.assert_array_equal(_bar_heights(ax_hist), counts)
    assert ax_hist.get_title() == f"gate weights, all texts (mean a1 {a1[keep].mean():.3f})"
    assert _ticks(ax_box, "x") == ["depression", "SuicideWatch", "bipolar", "offmychest"]
    # One box per class with texts, its mean marker (showmeans) at the class's mean a1.
    means = [line.get_ydata()[0] for line in ax_box.lines if line.get_marker() == "^"]
    np.testing.assert_allclose(means, [a1[labels == c].mean() for c in (0, 1, 3, 4)])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plots.plot_gate_weights(gates[:, :1], labels, names, tmp_path / "bad.png")


def test_ablation_plot(tmp_path, drawn):
    rows = [
        dict(arm="ce_only", accuracy_mean=0.9, accuracy_sd=0.01, macro_f1_mean=0.85,
             macro_f1_sd=float("nan")),
        dict(arm="cmhl_sum", accuracy_mean=0.91, accuracy_sd=0.01, macro_f1_mean=0.86,
             macro_f1_sd=0.02, macro_f1_diff=0.01, macro_f1_low=-0.002, macro_f1_high=0.02),
    ]  # fmt: skip
    assert _is_png(plots.plot_ablation(rows, tmp_path / "a.png"))
    ax, ax_ci = drawn["a.png"].axes
    # Bars: accuracy then macro-F1 per arm, in points; nan sd is drawn as 0.
    np.testing.assert_allclose(_bar_heights(ax), [90, 91, 85, 86])
    assert _ticks(ax, "x") == ["ce_only", "cmhl_sum"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["accuracy", "macro_f1"]
    # The CI panel: only the arm with a CI, its point at the difference (1 point).
    assert _ticks(ax_ci, "y") == ["cmhl_sum"]
    (point,) = [line for line in ax_ci.lines if line.get_marker() == "o"]
    assert point.get_xdata()[0] == pytest.approx(1.0) and point.get_ydata()[0] == 0
    caps = sorted(x for line in ax_ci.lines if line.get_marker() == "|" for x in line.get_xdata())
    assert caps == pytest.approx([-0.2, 2.0])  # the CI's ends, in points


def test_training_curves(tmp_path, drawn):
    metrics = tmp_path / "metrics.jsonl"
    train = [dict(step=s, loss=3.0 / s, ce_emotion=2.0 / s, lr=1e-3 * s) for s in (1, 2, 3)]
    val = [dict(step=3, val_accuracy=0.5, val_macro_f1=0.4)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in [*train, *val]))
    assert _is_png(plots.plot_training_curves(metrics, tmp_path / "curves.png"))
    ax_loss, ax_lr, ax_val = drawn["curves.png"].axes
    assert [line.get_label() for line in ax_loss.lines] == ["loss", "ce_emotion"]
    for line in ax_loss.lines:
        assert list(line.get_xdata()) == [1, 2, 3]
        key = line.get_label()
        np.testing.assert_allclose(line.get_ydata(), [r[key] for r in train])
    np.testing.assert_allclose(ax_lr.lines[0].get_ydata(), [1e-3, 2e-3, 3e-3])
    assert [(ln.get_label(), list(ln.get_ydata())) for ln in ax_val.lines] == [
        ("accuracy", [0.5]),
        ("macro_f1", [0.4]),
    ]
    low, high = ax_val.get_ylim()
    assert 0.3 < low < 0.4 and 0.5 < high < 0.6  # fitted to the values drawn, not 0 to 1
    assert [ax.get_title() for ax in (ax_loss, ax_lr, ax_val)] == [
        "training loss terms",
        "learning rate",
        "validation",
    ]


def test_training_curves_show_small_validation_changes(tmp_path, drawn):
    """Accuracy and F1 moving around 0.9 are not squeezed into a flat line on a 0-1 axis: the
    validation axis spans the values drawn (with a small margin)."""
    metrics = tmp_path / "metrics.jsonl"
    val = [
        dict(step=s, val_accuracy=a, val_macro_f1=f)
        for s, a, f in ((10, 0.901, 0.880), (20, 0.915, 0.893), (30, 0.922, 0.905))
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in val))
    plots.plot_training_curves(metrics, tmp_path / "curves.png")
    ax_val = drawn["curves.png"].axes[2]
    np.testing.assert_allclose(ax_val.lines[0].get_ydata(), [0.901, 0.915, 0.922])
    np.testing.assert_allclose(ax_val.lines[1].get_ydata(), [0.880, 0.893, 0.905])
    low, high = ax_val.get_ylim()
    assert 0.87 <= low < 0.880 and 0.922 < high <= 0.93
    # the smallest change drawn (0.007) is over a tenth of the axis height
    assert 0.007 / (high - low) > 0.1


@pytest.mark.slow
def test_eval_cli_plots(tmp_path_factory, drawn):
    workdir = helpers.trained_workdir(tmp_path_factory.getbasetemp())
    assert _is_png(plots.plot_training_curves(workdir / "metrics.jsonl", workdir / "curves.png"))
    eval_cli = load_script("eval.py")
    out = tmp_path_factory.mktemp("eval") / "val.json"
    data = helpers.emotion_data(tmp_path_factory.getbasetemp()) / "val.txt"
    eval_cli.main(["--workdir", str(workdir), "--data", str(data), "--output", str(out), "--plots"])
    report = json.loads(out.read_text())
    written = sorted(p.rsplit(".", 2)[-2] for p in report["plots"])
    assert written == ["coactivation", "confusion", "curves", "hinge", "reliability"]
    for name in written:
        assert _is_png(out.parent / f"val.{name}.png")
    # Drawn from the evaluated split: every val text is in the confusion matrix once, and
    # the reliability diagram's title carries the report's ECE.
    val_texts = len(data.read_text().splitlines())
    confusion = drawn["val.confusion.png"].axes[0]
    assert sum(int(t) for t in _texts(confusion)) == val_texts
    assert _ticks(confusion, "y") == NAMES
    reliability = drawn["val.reliability.png"].axes[0]
    assert reliability.get_title() == f"reliability (ECE {report['ece']:.3f})"
    assert "(sum)" in drawn["val.hinge.png"].axes[0].get_title()
