"""The emotion task (CMHL_SPEC section 1): emotion (6), valence (3) and intensity (2) heads.

The valence and intensity targets come from the emotion label through the affect tables
(`cmhl_jax.affect`); the loss is `config.loss.fn` (default: the built-in CMHL composite loss,
`cmhl_jax.losses.cmhl`), and the report adds the contradiction rate to the usual scores.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cmhl_jax import stats
from cmhl_jax.affect import build_affect_tables
from cmhl_jax.config import ConfigError
from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import (
    EXCLUSIVITY_VARIANTS,
    check_loss_fn,
    loss_tables,
    resolve_loss_fn,
)
from cmhl_jax.metrics import consistency_score, emotion_report
from cmhl_jax.tasks.base import Task, softmax_outputs


def loss_fn_name(config) -> str:
    """`loss.fn`; workdirs written before plug-in losses existed have none: the built-in."""
    return config.loss.get("fn", "cmhl")


def validate(config) -> None:
    """The emotion task's own config checks (the affect tables check themselves)."""
    if loss_fn_name(config) == "cmhl" and config.loss.variant not in EXCLUSIVITY_VARIANTS:
        raise ConfigError(
            f"loss.variant must be one of {EXCLUSIVITY_VARIANTS}, got {config.loss.variant!r}"
        )


def _example_loss_args(sizes: dict[str, int], arrays: dict, loss_cfg) -> tuple:
    """Shape-only inputs for checking a loss function before training."""
    batch = 2
    logits = {name: jnp.zeros((batch, size), jnp.float32) for name, size in sizes.items()}
    labels = jnp.zeros((batch,), jnp.int32)
    weights = jnp.ones((batch,), jnp.float32)
    return logits, labels, weights, arrays, jnp.float32(batch), loss_cfg


def make_task(config) -> Task:
    validate(config)
    try:
        tables = build_affect_tables(config.affect)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    arrays = {k: jnp.asarray(v) for k, v in loss_tables(tables).items()}
    sizes = {
        "emotion": len(tables.emotion_names),
        "valence": len(tables.valence_names),
        "intensity": len(tables.intensity_names),
    }
    loss_cfg = config.loss
    loss_fn = resolve_loss_fn(loss_fn_name(config))
    check_loss_fn(loss_fn, loss_fn_name(config), _example_loss_args(sizes, arrays, loss_cfg))
    mask = np.asarray(tables.pair_mask)
    positive_ids = [int(i) for i in np.flatnonzero(mask.any(1))]
    negative_ids = [int(j) for j in np.flatnonzero(mask.any(0))]

    def loss(outputs, head_params, labels, weights, normalizer):
        del head_params
        return loss_fn(outputs, labels, weights.astype(jnp.float32), arrays, normalizer, loss_cfg)

    def report(probs, labels, reference=None):
        del reference  # nothing is fixed on the validation split
        return emotion_report(
            probs,
            labels,
            tables,
            threshold=config.eval.contradiction_threshold,
            bins=config.eval.ece_bins,
        )

    def bootstrap_inputs(probs, labels):
        return stats.per_text_inputs(
            labels,
            probs,
            positive_ids,
            negative_ids,
            config.eval.contradiction_threshold,
            config.eval.ece_bins,
        )

    def consistency(probs):
        return {"consistency": consistency_score(probs["emotion"], positive_ids, negative_ids)}

    return Task(
        name="emotion",
        label_names=tables.emotion_names,
        primary="emotion",
        init_heads=lambda key, hidden_size: init_heads(key, hidden_size, sizes),
        apply_heads=apply_heads,
        loss=loss,
        probabilities=softmax_outputs,
        report=report,
        head_sizes=tuple(sorted(sizes.items())),
        head_labels={
            "emotion": tables.emotion_names,
            "valence": tables.valence_names,
            "intensity": tables.intensity_names,
        },
        selection_metric=config.checkpoint.metric,
        prediction_key="emotion",
        summary_metrics=(
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "contradiction_rate",
            "ece",
            "valence_accuracy",
            "intensity_accuracy",
        ),
        tables=tables,
        record_extras=consistency if positive_ids and negative_ids else None,
        table_metrics=("accuracy", "macro_f1", "weighted_f1", "contradiction_rate", "ece"),
        table_note=(
            "Contradiction: share of texts with both a positive and a negative emotion >= "
            "eval.contradiction_threshold. ECE: equal-width confidence bins (eval.ece_bins)."
        ),
        bootstrap_inputs=bootstrap_inputs,
    )
