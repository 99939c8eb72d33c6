"""The GoEmotions task's multi-label CMHL loss (docs/goemotions.md): sigmoid heads, binary
cross-entropy, and the shared exclusivity hinge (`cmhl_jax.losses`) on sigmoid probabilities
with co-occurrence-raised thresholds."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmhl_jax.losses import exclusivity_loss, exclusivity_per_text
from cmhl_jax.tasks.goemotions.labels import VALENCE_NAMES, group_names, valence_ids, valence_of


def adaptive_tau(label_counts, pair_counts, pair_mask, tau0: float, gain: float) -> np.ndarray:
    """tau_ij = min(tau0 + gain * r_ij / max r, 2) with r_ij = n_ij / min(n_i, n_j) over the
    masked (positive, negative) pairs; pairs that never co-occur keep tau0."""
    n = np.asarray(label_counts, np.float64)
    smaller = np.minimum(n[:, None], n[None, :])
    rate = np.divide(pair_counts, smaller, out=np.zeros_like(smaller), where=smaller > 0)
    rate = rate * (np.asarray(pair_mask) > 0)
    top = rate.max()
    raised = tau0 + gain * (rate / top if top > 0 else rate)
    return np.minimum(raised, 2.0).astype(np.float32)


def loss_arrays(ge) -> dict:
    """The tables the loss reads, at the granularity: `valence_map` [K, 4], the (positive,
    negative) `pair_mask` [K, K] and the adaptive thresholds `tau` [K, K]."""
    granularity = ge.granularity
    groups = group_names(granularity)
    valence = valence_of(granularity)
    positive_ids, negative_ids = valence_ids(granularity)
    pair_mask = np.zeros((len(groups), len(groups)), np.float32)
    pair_mask[np.ix_(positive_ids, negative_ids)] = 1.0
    counts = np.asarray(ge.cooccurrence, np.int64).reshape(-1, len(groups))
    if not counts.size:  # not counted (a config never trained): no pair is raised
        counts = np.zeros((len(groups), len(groups)), np.int64)
    tau = adaptive_tau(np.diagonal(counts), counts, pair_mask, ge.tau0, ge.cooccurrence_gain)
    return {
        "valence_map": jnp.asarray(np.eye(len(VALENCE_NAMES), dtype=np.float32)[valence]),
        "pair_mask": jnp.asarray(pair_mask),
        "tau": jnp.asarray(tau),
    }


def weighted_binary_cross_entropy(logits, targets, weights, normalizer) -> jax.Array:
    """Mean over texts (weight 1) of the sigmoid cross-entropy summed over a head's outputs:
    one text's loss for the whole head, as softmax CE is for a single-label head."""
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    return jnp.sum(bce.sum(axis=-1) * weights) / normalizer


def hinge_active_share(probs, pair_mask, tau, weights, normalizer, variant="sum") -> jax.Array:
    """Share of the texts (weight 1) on which the exclusivity hinge is non-zero: at least one
    masked pair with s(p_i, p_j) > tau_ij. Logged, never differentiated."""
    active = exclusivity_per_text(probs, pair_mask, tau, variant) > 0
    return jax.lax.stop_gradient(jnp.sum(active * weights) / normalizer)


@functools.partial(jax.jit, static_argnames=("variant",))
def multilabel_cmhl_loss(
    logits: dict[str, jax.Array],
    labels: jax.Array,
    weights: jax.Array,
    tables: dict[str, jax.Array],
    alpha: float,
    lam: float,
    normalizer: jax.Array | None = None,
    variant: str = "sum",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Multi-label CMHL (docs/goemotions.md): sigmoid heads, binary cross-entropy and the
    exclusivity hinge on sigmoid probabilities.

        L = (BCE_emotion + alpha * BCE_valence) / C + lam * L_excl

    Each BCE is summed over its head's outputs (`weighted_binary_cross_entropy`), so alpha
    weighs the valence head against the emotion head per text, as in the single-label task;
    dividing both by the emotion output count C keeps the loss on the scale of the mean
    per-label BCE (alpha = 0 is exactly BCE averaged over the labels). `labels` are multi-hot
    [..., C]; the valence targets are multi-hot too, labels @ `tables["valence_map"]` ([C, V],
    each label to its valence) clipped to 1, so a text whose labels span positive and negative
    has both valence targets on. L_excl is `exclusivity_loss` on sigmoid(emotion logits) with
    `tables["pair_mask"]` and the co-occurrence-raised `tables["tau"]`; `hinge_active` (logged)
    is the share of texts on which it is non-zero.
    """
    weights = weights.astype(jnp.float32)
    if normalizer is None:
        normalizer = jnp.maximum(weights.sum(), 1.0)
    labels = labels.astype(jnp.float32)
    num_labels = labels.shape[-1]
    bce_emotion = (
        weighted_binary_cross_entropy(logits["emotion"], labels, weights, normalizer) / num_labels
    )
    valence_targets = jnp.minimum(labels @ tables["valence_map"], 1.0)
    bce_valence = (
        weighted_binary_cross_entropy(logits["valence"], valence_targets, weights, normalizer)
        / num_labels
    )
    probs = jax.nn.sigmoid(logits["emotion"].astype(jnp.float32))
    pair_args = (probs, tables["pair_mask"], tables["tau"], weights, normalizer, variant)
    excl = exclusivity_loss(*pair_args)
    total = bce_emotion + alpha * bce_valence + lam * excl
    terms = {
        "loss": total,
        "bce_emotion": bce_emotion,
        "bce_valence": bce_valence,
        "exclusivity": excl,
        "hinge_active": hinge_active_share(*pair_args),
    }
    return total, terms


def multilabel_cmhl(logits, labels, weights, tables, normalizer, cfg):
    """The built-in loss of multi-label tasks (`loss.fn=cmhl` there): `multilabel_cmhl_loss`
    with `cfg.alpha`, `cfg.lam` and `cfg.variant`. Same signature as `cmhl`; labels are
    multi-hot float32 [B, C] and tables hold `valence_map`, `pair_mask` and `tau`."""
    return multilabel_cmhl_loss(
        logits,
        labels,
        weights,
        tables,
        cfg.alpha,
        cfg.lam,
        normalizer=normalizer,
        variant=cfg.variant,
    )
