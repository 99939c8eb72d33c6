"""The emotion task's CMHL composite loss (CMHL_SPEC 1.3), one jitted function.

    L = CE_emotion + alpha * CE_valence + beta * CE_intensity + lambda * L_excl

All terms are weighted means over texts: `weights` is 1 for a real text and 0 for a padding
slot, and `normalizer` (default: the sum of weights) lets data-parallel callers divide by the
global text count instead of the local one. The shared pieces (weighted cross-entropy, the
pairwise exclusivity hinge) are in `cmhl_jax.losses`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cmhl_jax.losses import exclusivity_loss, weighted_cross_entropy
from cmhl_jax.tasks.emotion.affect import AffectTables


def loss_tables(tables: AffectTables) -> dict[str, np.ndarray]:
    """The arrays the loss needs, as a pytree of arrays."""
    return {
        "valence_label": tables.valence_label,
        "intensity_label": tables.intensity_label,
        "pair_mask": tables.pair_mask,
        "tau": tables.tau,
    }


def balance_loss(ce_emotion, ce_valence, ce_intensity, alpha, beta) -> jax.Array:
    """L_bal = CE_emotion + alpha * CE_valence + beta * CE_intensity (spec 1.3)."""
    return ce_emotion + alpha * ce_valence + beta * ce_intensity


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


def cmhl(logits, labels, weights, tables, normalizer, cfg):
    """The built-in loss (the default `loss.fn`): `cmhl_loss` with `cfg.alpha`, `cfg.beta`,
    `cfg.lam` and the exclusivity form `cfg.variant` (sum, product or min).

    Every loss function, built-in or plug-in, has this signature:

        loss_fn(logits, labels, weights, tables, normalizer, cfg) -> (total, terms)

    logits: head name -> float32 [B, C] (`emotion`, `valence`, `intensity`); labels: int32 [B]
    emotion ids; weights: float32 [B], 1 for a real text and 0 for padding; tables: the affect
    tables as arrays (`valence_label`, `intensity_label`, `pair_mask`, `tau`); normalizer: the
    global count of real texts (scalar); cfg: `config.loss` (a plug-in reads its own
    hyper-parameters from `--config.loss.<name>=...`). Returns the scalar total and a dict of
    named scalar terms that includes "loss"; every term is logged.
    """
    return cmhl_loss(
        logits,
        labels,
        weights,
        tables,
        cfg.alpha,
        cfg.beta,
        cfg.lam,
        normalizer=normalizer,
        variant=cfg.variant,
    )
