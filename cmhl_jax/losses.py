"""The CMHL composite loss (CMHL_SPEC 1.3), one jitted function.

    L = CE_emotion + alpha * CE_valence + beta * CE_intensity + lambda * L_excl

All terms are weighted means over texts: `weights` is 1 for a real text and 0 for a padding
slot, and `normalizer` (default: the sum of weights) lets data-parallel callers divide by the
global text count instead of the local one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmhl_jax.affect import AffectTables

EXCLUSIVITY_VARIANTS = ("sum", "product", "min")


def loss_tables(tables: AffectTables) -> dict[str, np.ndarray]:
    """The arrays the loss needs, as a pytree of arrays."""
    return {
        "valence_label": tables.valence_label,
        "intensity_label": tables.intensity_label,
        "pair_mask": tables.pair_mask,
        "tau": tables.tau,
    }


def weighted_cross_entropy(logits, labels, weights, normalizer) -> jax.Array:
    """Mean softmax cross-entropy over the texts with weight 1."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return jnp.sum(nll * weights) / normalizer


def balance_loss(ce_emotion, ce_valence, ce_intensity, alpha, beta) -> jax.Array:
    """L_bal = CE_emotion + alpha * CE_valence + beta * CE_intensity (spec 1.3)."""
    return ce_emotion + alpha * ce_valence + beta * ce_intensity


def pair_scores(probs: jax.Array, variant: str) -> tuple[jax.Array, jax.Array]:
    """Scores of all emotion pairs [..., C, C] and the map from tau to the variant's scale.

    `sum` is the paper's p_i + p_j compared with tau_ij. The alternatives are matched to it at
    the point p_i = p_j = tau/2: `product` compares p_i * p_j with (tau/2)^2 and `min` compares
    min(p_i, p_j) with tau/2, so they fire only when BOTH emotions are likely.
    """
    p_i, p_j = probs[..., :, None], probs[..., None, :]
    if variant == "sum":
        return p_i + p_j, lambda tau: tau
    if variant == "product":
        return p_i * p_j, lambda tau: (tau / 2) ** 2
    if variant == "min":
        return jnp.minimum(p_i, p_j), lambda tau: tau / 2
    raise ValueError(
        f"unknown exclusivity variant {variant!r}; choose one of {EXCLUSIVITY_VARIANTS}"
    )


def exclusivity_loss(probs, pair_mask, tau, weights, normalizer, variant="sum") -> jax.Array:
    """Adaptive exclusivity L_excl (spec 1.3): the mean over texts and over all (i in P, j in N)
    pairs of max(0, s(p_i, p_j) - tau_ij), computed for all pairs as one masked matrix."""
    scores, scale_tau = pair_scores(probs.astype(jnp.float32), variant)
    hinge = jax.nn.relu(scores - scale_tau(tau)) * pair_mask
    per_text = hinge.sum(axis=(-2, -1)) / pair_mask.sum()
    return jnp.sum(per_text * weights) / normalizer


@functools.partial(jax.jit, static_argnames=("variant",))
def cmhl_loss(
    logits: dict[str, jax.Array],
    labels: jax.Array,
    weights: jax.Array,
    tables: dict[str, jax.Array],
    alpha: float,
    beta: float,
    lam: float,
    normalizer: jax.Array | None = None,
    variant: str = "sum",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total CMHL loss and every term. `labels` are emotion ids; the valence and intensity
    targets are derived from them through the affect tables (no extra annotation)."""
    weights = weights.astype(jnp.float32)
    if normalizer is None:
        normalizer = jnp.maximum(weights.sum(), 1.0)
    ce_emotion = weighted_cross_entropy(logits["emotion"], labels, weights, normalizer)
    ce_valence = weighted_cross_entropy(
        logits["valence"], tables["valence_label"][labels], weights, normalizer
    )
    ce_intensity = weighted_cross_entropy(
        logits["intensity"], tables["intensity_label"][labels], weights, normalizer
    )
    probs = jax.nn.softmax(logits["emotion"].astype(jnp.float32), axis=-1)
    excl = exclusivity_loss(probs, tables["pair_mask"], tables["tau"], weights, normalizer, variant)
    total = balance_loss(ce_emotion, ce_valence, ce_intensity, alpha, beta) + lam * excl
    terms = {
        "loss": total,
        "ce_emotion": ce_emotion,
        "ce_valence": ce_valence,
        "ce_intensity": ce_intensity,
        "exclusivity": excl,
    }
    return total, terms
