"""The CMHL loss (CMHL_SPEC 1.3) and the affect tables (1.1) against hand computations."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cmhl_jax.losses import exclusivity_loss
from cmhl_jax.tasks.emotion.affect import (
    EMOTIONS,
    build_affect_tables,
    default_affect_config,
    threshold_matrix,
)
from cmhl_jax.tasks.emotion.loss import cmhl_loss, loss_tables

# NRC-VAD (valence, arousal) of the spec's table, typed in again on purpose.
NRC = {
    "sadness": (0.052, 0.288),
    "joy": (0.980, 0.824),
    "love": (1.000, 0.519),
    "anger": (0.167, 0.865),
    "fear": (0.073, 0.840),
    "surprise": (0.875, 0.875),
}
VALENCE = {"sadness": 0, "joy": 2, "love": 2, "anger": 0, "fear": 0, "surprise": 1}
INTENSITY = {"sadness": 0, "joy": 1, "love": 0, "anger": 1, "fear": 1, "surprise": 1}
POSITIVE, NEGATIVE = ("joy", "love"), ("sadness", "anger", "fear")
TAU0, GAMMA = 0.5, 0.2


@pytest.fixture(scope="module")
def tables():
    return build_affect_tables(default_affect_config())


def loss_arrays(tables):
    return {k: jnp.asarray(v) for k, v in loss_tables(tables).items()}


# ------------------------------------------------------------------------------------------
# Plain-Python reference


def log_softmax(logits):
    top = max(logits)
    lse = top + math.log(sum(math.exp(z - top) for z in logits))
    return [z - lse for z in logits]


def softmax(logits):
    return [math.exp(z) for z in log_softmax(logits)]


def hand_tau(i, j):
    dist = {(a, b): math.dist(NRC[a], NRC[b]) for a in EMOTIONS for b in EMOTIONS}
    return TAU0 - GAMMA * dist[i, j] / max(dist.values())


def hand_exclusivity(probs, variant):
    """Mean over the 6 (i in P, j in N) pairs of the hinge, for one text."""
    p = dict(zip(EMOTIONS, probs, strict=True))
    total = 0.0
    for i in POSITIVE:
        for j in NEGATIVE:
            tau = hand_tau(i, j)
            if variant == "sum":
                total += max(0.0, p[i] + p[j] - tau)
            elif variant == "product":
                total += max(0.0, p[i] * p[j] - (tau / 2) ** 2)
            else:
                total += max(0.0, min(p[i], p[j]) - tau / 2)
    return total / (len(POSITIVE) * len(NEGATIVE))


# Two texts: a confident "joy" text whose runner-up is "anger", and a "fear" text that is
# split between love and fear (a contradiction the exclusivity term should punish).
LOGITS = {
    "emotion": [[0.1, 2.0, 0.3, 1.2, -0.4, 0.0], [-0.2, 0.1, 1.5, 0.0, 1.6, -1.0]],
    "valence": [[0.2, -0.1, 1.1], [0.7, 0.3, -0.5]],
    "intensity": [[0.4, -0.3], [-0.6, 0.9]],
}
LABELS = ["joy", "fear"]
ALPHA, BETA, LAM = 0.5, 0.3, 0.4


@pytest.mark.parametrize("variant", ["sum", "product", "min"])
def test_loss_matches_hand_computation(tables, variant):
    label_ids = [EMOTIONS.index(name) for name in LABELS]
    ce = {"emotion": 0.0, "valence": 0.0, "intensity": 0.0}
    excl = 0.0
    for t, name in enumerate(LABELS):
        ce["emotion"] -= log_softmax(LOGITS["emotion"][t])[EMOTIONS.index(name)]
        ce["valence"] -= log_softmax(LOGITS["valence"][t])[VALENCE[name]]
        ce["intensity"] -= log_softmax(LOGITS["intensity"][t])[INTENSITY[name]]
        excl += hand_exclusivity(softmax(LOGITS["emotion"][t]), variant)
    ce = {k: v / 2 for k, v in ce.items()}
    excl /= 2
    total = ce["emotion"] + ALPHA * ce["valence"] + BETA * ce["intensity"] + LAM * excl

    logits = {k: jnp.asarray(v, jnp.float32) for k, v in LOGITS.items()}
    loss, terms = cmhl_loss(
        logits,
        jnp.asarray(label_ids),
        jnp.ones(2),
        loss_arrays(tables),
        ALPHA,
        BETA,
        LAM,
        variant=variant,
    )
    assert excl > 0  # the example is chosen so that the hinge is active
    np.testing.assert_allclose(float(terms["ce_emotion"]), ce["emotion"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(terms["ce_valence"]), ce["valence"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(terms["ce_intensity"]), ce["intensity"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(terms["exclusivity"]), excl, rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(loss), total, rtol=0, atol=1e-6)
    assert float(terms["loss"]) == float(loss)


def test_variants_differ_on_a_confident_prediction(tables):
    """Research note of spec 1.3: the sum form fires on one confident emotion alone, the
    product and min forms only when a positive AND a negative emotion are both likely."""
    confident = jnp.log(jnp.asarray([[0.01, 0.95, 0.01, 0.01, 0.01, 0.01]]))
    tabs = loss_arrays(tables)
    probs = jax.nn.softmax(confident)
    values = {
        v: float(exclusivity_loss(probs, tabs["pair_mask"], tabs["tau"], jnp.ones(1), 1.0, v))
        for v in ("sum", "product", "min")
    }
    assert values["sum"] > 0.3
    assert values["product"] == 0.0
    assert values["min"] == 0.0


@pytest.mark.parametrize("variant", ["sum", "product", "min"])
def test_exclusivity_matrix_equals_double_loop(tables, variant):
    rng = np.random.default_rng(0)
    n = 7
    # Peaked random distributions, so that the hinge is active for some pairs and not others.
    probs = rng.dirichlet(np.full(6, 0.3), size=n).astype(np.float32)
    weights = np.array([1, 1, 0, 1, 0.5, 1, 1], np.float32)
    normalizer = 4.0
    got = exclusivity_loss(
        jnp.asarray(probs),
        jnp.asarray(tables.pair_mask),
        jnp.asarray(tables.tau),
        jnp.asarray(weights),
        normalizer,
        variant,
    )
    expected = sum(
        w * hand_exclusivity([float(x) for x in p], variant)
        for p, w in zip(probs, weights, strict=True)
    )
    expected /= normalizer
    assert expected > 0
    np.testing.assert_allclose(float(got), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_loss_gradients(tables):
    rng = np.random.default_rng(1)
    logits = {
        k: jnp.asarray(rng.normal(size=(4, c)), jnp.float32)
        for k, c in (("emotion", 6), ("valence", 3), ("intensity", 2))
    }
    labels = jnp.asarray([1, 3, 2, 4])
    weights = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    tabs = loss_arrays(tables)

    for variant in ("sum", "product", "min"):

        def f(logits, variant=variant):
            return cmhl_loss(logits, labels, weights, tabs, 0.5, 0.5, 0.4, variant=variant)[0]

        grads = jax.grad(f)(logits)
        assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
        # Padding slots (weight 0) get no gradient.
        assert all(float(jnp.abs(g[3]).max()) == 0.0 for g in grads.values())
        check_grads(f, (logits,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_zero_weights_give_exactly_the_emotion_cross_entropy(tables):
    """alpha = beta = lam = 0 is the plain-CE baseline, computed by the same code."""
    rng = np.random.default_rng(2)
    logits = {
        k: jnp.asarray(rng.normal(size=(5, c)) * 3, jnp.float32)
        for k, c in (("emotion", 6), ("valence", 3), ("intensity", 2))
    }
    labels = jnp.asarray([0, 1, 2, 3, 5])
    weights = jnp.asarray([1.0, 1.0, 0.0, 1.0, 1.0])
    loss, terms = cmhl_loss(logits, labels, weights, loss_arrays(tables), 0.0, 0.0, 0.0)
    assert float(loss) == float(terms["ce_emotion"])
    nll = -jax.nn.log_softmax(logits["emotion"])[jnp.arange(5), labels]
    np.testing.assert_allclose(float(loss), float((nll * weights).sum() / 4), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Affect tables


def test_affect_label_maps(tables):
    assert tables.emotion_names == EMOTIONS
    assert tables.valence_names == ("negative", "neutral", "positive")
    assert tables.intensity_names == ("low", "high")
    assert tables.valence_label.tolist() == [VALENCE[e] for e in EMOTIONS]
    assert tables.intensity_label.tolist() == [INTENSITY[e] for e in EMOTIONS]
    pairs = {(EMOTIONS[i], EMOTIONS[j]) for i, j in np.argwhere(tables.pair_mask)}
    assert pairs == set(itertools.product(POSITIVE, NEGATIVE))
    assert tables.pair_mask.sum() == 6


def test_tau_matrix(tables):
    tau = tables.tau
    assert tau.shape == (6, 6)
    np.testing.assert_allclose(np.diag(tau), TAU0, atol=1e-7)
    np.testing.assert_array_equal(tau, tau.T)
    # sadness-joy is the farthest pair on the NRC plane: d = 1, tau = tau0 - gamma.
    s, j = EMOTIONS.index("sadness"), EMOTIONS.index("joy")
    np.testing.assert_allclose(tau[s, j], TAU0 - GAMMA, atol=1e-7)
    assert tau.min() == tau[s, j]
    for a, b in itertools.product(EMOTIONS, EMOTIONS):
        np.testing.assert_allclose(
            tau[EMOTIONS.index(a), EMOTIONS.index(b)], hand_tau(a, b), atol=1e-7
        )
    # The formula itself, on a toy plane: points at distance 0, 1 and 2.
    toy = threshold_matrix(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), 0.6, 0.4)
    np.testing.assert_allclose(toy[0], [0.6, 0.4, 0.2], atol=1e-7)


def test_tau0_and_gamma_come_from_the_config():
    affect = default_affect_config()
    affect.tau0, affect.gamma = 0.8, 0.5
    tau = build_affect_tables(affect).tau
    assert tau[0, 0] == pytest.approx(0.8)
    assert tau.min() == pytest.approx(0.3)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: setattr(a, "positive_set", ["joy", "glee"]), "positive_set names unknown"),
        (lambda a: setattr(a, "negative_set", ["joy", "anger"]), "must be disjoint"),
        (lambda a: a.valence_of.update({"joy": "happy"}), "valence_of uses unknown classes"),
        (lambda a: a.intensity_of.update({"fear": "extreme"}), "intensity_of uses unknown"),
        (lambda a: delattr(a.valence_arousal, "love"), "valence_arousal has no entry for"),
    ],
)
def test_affect_config_errors(edit, message):
    affect = default_affect_config()
    edit(affect)
    with pytest.raises(ValueError, match=message):
        build_affect_tables(affect)
