"""Mental-health task building blocks (CMHL_SPEC section 2)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmhl_jax.tasks import EarlyStopping
from cmhl_jax.tasks.mental_health import (
    SWMH_LABELS,
    apply_gated_heads,
    default_mental_health_config,
    init_gated_heads,
    intensity_labels,
    learned_loss_weight,
    mental_health_loss,
    mental_health_report,
    selection_score,
)

HIDDEN = 8


@pytest.fixture(scope="module")
def config():
    return default_mental_health_config()


@pytest.fixture(scope="module")
def params(config):
    return init_gated_heads(
        jax.random.key(0),
        HIDDEN,
        len(config.label_names),
        len(config.level_names),
        config.gate_bottleneck,
        config.initial_loss_weight,
    )


def test_default_intensity_map(config):
    # offmychest low; Anxiety, depression, bipolar medium; SuicideWatch high (spec 2).
    levels = dict(zip(SWMH_LABELS, intensity_labels(config).tolist(), strict=True))
    assert levels == {
        "self.depression": 1,
        "self.SuicideWatch": 2,
        "self.Anxiety": 1,
        "self.bipolar": 1,
        "self.offmychest": 0,
    }


def test_custom_intensity_map(config):
    custom = config.copy_and_resolve_references()
    custom.level_names = ["mild", "severe"]
    custom.intensity_of = {
        "mild": ["self.depression", "self.Anxiety", "self.bipolar", "self.offmychest"],
        "severe": ["self.SuicideWatch"],
    }
    assert intensity_labels(custom).tolist() == [0, 1, 0, 0, 0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"medium": ["self.Anxiety", "self.depression"]}, "no level; .*'self.bipolar'"),
        ({"high": ["self.suicidewatch"]}, "unknown classes \\['self.suicidewatch'\\]"),
        ({"extreme": ["self.SuicideWatch"]}, "unknown levels \\['extreme'\\]"),
        ({"low": ["self.offmychest", "self.bipolar"]}, "several levels: .*self.bipolar"),
    ],
)
def test_bad_intensity_map(config, change, message):
    bad = config.copy_and_resolve_references()
    bad.intensity_of = bad.intensity_of.to_dict() | change
    with pytest.raises(ValueError, match=message):
        intensity_labels(bad)


def test_gated_heads_shapes_and_gate_sums_to_one(params):
    hidden = jax.random.normal(jax.random.key(1), (3, 4, HIDDEN))
    out = apply_gated_heads(params, hidden, dropout_rate=0.15, rng=jax.random.key(2))
    assert {k: v.shape for k, v in out.items()} == {
        "primary": (3, 4, 5),
        "intensity": (3, 4, 3),
        "gate": (3, 4, 2),
        "final": (3, 4, 5),
    }
    np.testing.assert_allclose(out["gate"].sum(-1), 1.0, rtol=1e-6)
    assert (out["gate"] > 0).all()
    assert jnp.allclose(learned_loss_weight(params["loss_weight_raw"]), 0.5)


def test_final_logits_match_hand_computation():
    """Two classes, one level, hidden 2, bottleneck 1: every step of spec 2 by hand."""
    params = {
        "primary": {"kernel": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "bias": jnp.array([0.5, 0.0])},
        "intensity": {"kernel": jnp.array([[1.0], [1.0]]), "bias": jnp.array([-1.0])},
        "gate_hidden": {"kernel": jnp.array([[1.0], [0.0], [-1.0]]), "bias": jnp.array([0.2])},
        "gate_out": {"kernel": jnp.array([[2.0, -1.0]]), "bias": jnp.array([0.0, 0.3])},
        "final": {
            "kernel": jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]),
            "bias": jnp.array([0.1, -0.1]),
        },
        "loss_weight_raw": jnp.array(0.0),
    }
    h = np.array([1.0, 2.0])
    z_m = np.array([1.0 + 0.5, 4.0])  # W_M h + b_M
    z_i = np.array([1.0 + 2.0 - 1.0])  # W_I h + b_I
    u = np.tanh(1.0 * z_m[0] + 0.0 * z_m[1] - 1.0 * z_i[0] + 0.2)  # tanh(W1 z + b1)
    scores = np.array([2.0 * u, -1.0 * u + 0.3])  # W2 u + b2
    a = np.exp(scores) / np.exp(scores).sum()
    gated = np.concatenate([a[0] * z_m, a[1] * z_i])
    final = np.array([gated[0] + gated[2] + 0.1, gated[1] - gated[2] - 0.1])

    out = apply_gated_heads(params, jnp.asarray(h))
    np.testing.assert_allclose(out["primary"], z_m, rtol=1e-6)
    np.testing.assert_allclose(out["intensity"], z_i, rtol=1e-6)
    np.testing.assert_allclose(out["gate"], a, rtol=1e-6)
    np.testing.assert_allclose(out["final"], final, rtol=1e-6)


def test_loss_terms_and_text_mask(config, params):
    table = jnp.asarray(intensity_labels(config))
    hidden = jax.random.normal(jax.random.key(3), (2, 3, HIDDEN))
    logits = apply_gated_heads(params, hidden)
    labels = jnp.array([[1, 4, 0], [2, 3, 0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    total, terms = mental_health_loss(logits, labels, table, mask, params["loss_weight_raw"])

    def ce(z, y):
        return -jax.nn.log_softmax(z)[y]

    real = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    ce_final = np.mean([ce(logits["final"][r, s], labels[r, s]) for r, s in real])
    ce_level = np.mean([ce(logits["intensity"][r, s], table[labels[r, s]]) for r, s in real])
    np.testing.assert_allclose(terms["ce_final"], ce_final, rtol=1e-5)
    np.testing.assert_allclose(terms["ce_intensity"], ce_level, rtol=1e-5)
    np.testing.assert_allclose(terms["loss_weight"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(total, ce_final + 0.5 * ce_level, rtol=1e-5)
    assert terms["loss"] == total


def test_learned_loss_weight_stays_positive(config, params):
    """The gradient of L w.r.t. omega is softplus'(omega) * CE_intensity > 0: plain descent
    pushes w down at every step, yet softplus keeps it above 0."""
    table = jnp.asarray(intensity_labels(config))
    logits = apply_gated_heads(params, jax.random.normal(jax.random.key(4), (16, HIDDEN)))
    labels, mask = jnp.arange(16) % 5, jnp.ones(16)

    def loss(raw):
        return mental_health_loss(logits, labels, table, mask, raw)[0]

    optimizer = optax.sgd(10.0)
    raw = params["loss_weight_raw"]
    state = optimizer.init(raw)
    weights = [float(learned_loss_weight(raw))]
    for _ in range(300):
        updates, state = optimizer.update(jax.grad(loss)(raw), state)
        raw = optax.apply_updates(raw, updates)
        weights.append(float(learned_loss_weight(raw)))
    assert weights[-1] < 0.05 * weights[0]
    assert all(w > 0 for w in weights)
    assert all(b <= a for a, b in zip(weights, weights[1:], strict=False))


def test_selection_score_picks_the_right_checkpoint(config):
    history = [
        {"macro_f1": 0.60, "weighted_f1": 0.61, "mean_confidence": 0.50},  # 0.570
        {"macro_f1": 0.70, "weighted_f1": 0.71, "mean_confidence": 0.40},  # 0.610
        {"macro_f1": 0.66, "weighted_f1": 0.80, "mean_confidence": 0.60},  # 0.642 best
        {"macro_f1": 0.72, "weighted_f1": 0.72, "mean_confidence": 0.30},  # 0.594 best F1
    ]
    assert selection_score(history[2], config.selection) == pytest.approx(0.7 * 0.66 + 0.3 * 0.6)

    def best(selection):  # the checkpoint the loop keeps: the highest selection score
        return int(np.argmax([selection_score(report, selection) for report in history]))

    assert best(config.selection) == 2
    f1_only = {"f1_metric": "macro_f1", "f1_weight": 1.0, "confidence_weight": 0.0}
    assert best(f1_only) == 3
    weighted = dict(config.selection) | {"f1_metric": "weighted_f1"}
    assert best(weighted) == 2
    with pytest.raises(ValueError, match="f1_metric"):
        best(dict(config.selection) | {"f1_metric": "f1"})


def test_early_stopping_after_exactly_patience_bad_epochs():
    stopper = EarlyStopping(patience=3)
    assert [stopper.update(m) for m in (0.5, 0.6, 0.6, 0.55, 0.7)] == [False] * 5  # resets
    assert [stopper.update(m) for m in (0.7, 0.69, 0.65)] == [False, False, True]
    assert stopper.best == 0.7


def test_early_stopping_state_round_trip():
    stopper = EarlyStopping(patience=3)
    for metric in (0.5, 0.4, 0.45):
        stopper.update(metric)
    resumed = EarlyStopping.from_state_dict(stopper.state_dict())
    assert resumed == stopper
    assert resumed.update(0.3) is True
    never = EarlyStopping(patience=0)
    assert not any(never.update(0.1) for _ in range(10))


def test_report_keys_and_gate_means(config):
    labels = np.array([0, 0, 1, 4, 4, 4])
    final = np.full((6, 5), 0.1)
    final[np.arange(6), [0, 2, 1, 4, 4, 3]] = 0.6  # 4 of 6 correct, confidence 0.6
    intensity = np.eye(3)[[1, 1, 2, 0, 1, 0]]  # levels 1, 1, 2, 0, 0, 0: 5 of 6 correct
    gate = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1], [0.5, 0.5], [0.7, 0.3], [0.6, 0.4]])
    report = mental_health_report(
        {"final": final, "intensity": intensity, "gate": gate}, labels, config
    )
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_recall", "per_class"):
        assert key in report
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["intensity_accuracy"] == pytest.approx(5 / 6)
    assert report["mean_confidence"] == pytest.approx(0.6)
    assert np.asarray(report["confusion_matrix"]).shape == (5, 5)
    assert report["ece"] == pytest.approx(abs(4 / 6 - 0.6))
    gates = report["mean_gate"]
    np.testing.assert_allclose(gates["self.depression"], [0.3, 0.7])
    np.testing.assert_allclose(gates["self.SuicideWatch"], [0.9, 0.1])
    np.testing.assert_allclose(gates["self.offmychest"], [0.6, 0.4])
    assert gates["self.Anxiety"] is None
    expected = 0.7 * report["macro_f1"] + 0.3 * 0.6
    assert report["selection_score"] == pytest.approx(expected)


@pytest.mark.parametrize("name", ["swmh_roberta", "swmh_minilm"])
def test_configs(name):
    """The mental-health configs validate (buckets cover max_length, ...), use the package's
    classes, and select checkpoints by a score that the task's report has."""
    from cmhl_jax.config import load_config
    from cmhl_jax.tasks import validate_config

    config = load_config(Path(__file__).parents[1] / "configs" / f"{name}.py")
    validate_config(config)
    assert config.task == "mental_health"
    assert tuple(config.mental_health.label_names) == tuple(SWMH_LABELS)
    levels = intensity_labels(config.mental_health)
    outputs = {
        "final": np.eye(5) * 0.5 + 0.1,
        "intensity": np.eye(len(config.mental_health.level_names))[levels],
        "gate": np.full((5, 2), 0.5),
    }
    report = mental_health_report(outputs, np.arange(5), config.mental_health)
    assert np.isfinite(report[config.checkpoint.metric])


def test_label_names_read_the_reddit_mh_data(reddit_mh_data, config):
    """The config's class names are the labels of the reddit_mh CSVs (conftest's format)."""
    from cmhl_jax.data import read_examples

    examples = read_examples(reddit_mh_data / "val.csv", config.label_names)
    assert len(examples) == 25
    assert np.bincount(examples.labels, minlength=5).min() > 0
