"""The CMHL composite loss (CMHL_SPEC 1.3), one jitted function.

    L = CE_emotion + alpha * CE_valence + beta * CE_intensity + lambda * L_excl

All terms are weighted means over texts: `weights` is 1 for a real text and 0 for a padding
slot, and `normalizer` (default: the sum of weights) lets data-parallel callers divide by the
global text count instead of the local one.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmhl_jax.affect import AffectTables
from cmhl_jax.config import ConfigError

EXCLUSIVITY_VARIANTS = ("sum", "product", "min")
LOSS_FN_SIGNATURE = "loss_fn(logits, labels, weights, tables, normalizer, cfg) -> (total, terms)"


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


def exclusivity_per_text(probs, pair_mask, tau, variant="sum") -> jax.Array:
    """Each text's mean over all (i in P, j in N) pairs of max(0, s(p_i, p_j) - tau_ij)
    (spec 1.3), computed for all pairs as one masked matrix: [..., K] -> [...]."""
    scores, scale_tau = pair_scores(probs.astype(jnp.float32), variant)
    hinge = jax.nn.relu(scores - scale_tau(tau)) * pair_mask
    return hinge.sum(axis=(-2, -1)) / pair_mask.sum()


def exclusivity_loss(probs, pair_mask, tau, weights, normalizer, variant="sum") -> jax.Array:
    """Adaptive exclusivity L_excl (spec 1.3): the weighted mean over texts of
    `exclusivity_per_text`."""
    per_text = exclusivity_per_text(probs, pair_mask, tau, variant)
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


BUILTIN_LOSSES = {"cmhl": cmhl}


def resolve_loss_fn(spec: str):
    """The loss function named by `loss.fn`: a built-in name (`cmhl`) or `module:function`,
    with the module importable from the working directory or PYTHONPATH."""
    if spec in BUILTIN_LOSSES:
        return BUILTIN_LOSSES[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LossFnError(
            f"loss.fn={spec!r}: expected a built-in ({', '.join(BUILTIN_LOSSES)}) or "
            "MODULE:FUNCTION, e.g. my_losses:focal_exclusivity"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LossFnError(f"loss.fn={spec!r}: cannot import {module_name!r}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise LossFnError(f"loss.fn={spec!r}: {module_name} has no function {attr!r}")
    try:
        inspect.signature(fn).bind(*range(6))
    except TypeError:
        raise LossFnError(
            f"loss.fn={spec!r}: {attr}{inspect.signature(fn)} does not take the six arguments "
            f"of {LOSS_FN_SIGNATURE}"
        ) from None
    except ValueError:  # no signature (a builtin or C function): checked by tracing
        pass
    return fn


def check_loss_fn(fn, spec: str, example_args: tuple) -> None:
    """Traces `fn` once on example inputs (no compilation): it must return a scalar total
    and a dict of scalar terms with a "loss" entry."""
    try:
        *arrays, cfg = example_args
        out = jax.eval_shape(lambda *a: fn(*a, cfg), *arrays)
    except Exception as err:  # any failure inside the user's function, reported as one line
        raise LossFnError(f"loss.fn={spec!r} failed on an example batch: {err}") from None
    problem = None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        problem = f"returned {jax.tree_util.tree_structure(out)}, not (total, terms)"
    elif out[0].shape != () or any(v.shape != () for v in out[1].values()):
        shapes = {"total": out[0].shape, **{k: v.shape for k, v in out[1].items()}}
        problem = f"returned non-scalar values {shapes}"
    elif "loss" not in out[1]:
        problem = f"terms {sorted(out[1])} have no 'loss' entry"
    if problem:
        raise LossFnError(f"loss.fn={spec!r} {problem}; expected {LOSS_FN_SIGNATURE}")


class LossFnError(ConfigError):
    """`loss.fn` names no usable loss function; the message says why."""
