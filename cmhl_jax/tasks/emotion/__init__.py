"""The emotion task (CMHL_SPEC section 1): emotion (6), valence (3) and intensity (2) heads.

Everything the task knows is in this package:

* `affect`: the label names, the valence and intensity maps, the P x N pair mask and the
  adaptive thresholds tau, built from the config's `affect` block;
* `loss`: the CMHL composite loss (`cmhl`, the default `loss.fn`; plug-ins take its place);
* `report`: the validation report (the usual scores, the contradiction rate, calibration);
* `tfds`: the `cmhl_emotion` TFDS builder (needs tensorflow-datasets);
* here: the config blocks (`default_config_blocks`), their checks (`validate`) and the task.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from cmhl_jax import stats
from cmhl_jax.config import check, raise_problems
from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import EXCLUSIVITY_VARIANTS, resolved_loss_fn
from cmhl_jax.tasks.base import Task, softmax_outputs
from cmhl_jax.tasks.emotion.affect import EMOTIONS, build_affect_tables, default_affect_config
from cmhl_jax.tasks.emotion.loss import cmhl, loss_tables
from cmhl_jax.tasks.emotion.report import consistency_score, emotion_report

__all__ = ["EMOTIONS", "default_config_blocks", "make_task", "validate"]

BUILTIN_LOSSES = {"cmhl": cmhl}
SUMMARY_METRICS = (
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "contradiction_rate",
    "ece",
    "valence_accuracy",
    "intensity_accuracy",
)
TABLE_METRICS = ("accuracy", "macro_f1", "weighted_f1", "contradiction_rate", "ece")
TABLE_NOTE = (
    "Contradiction: share of texts with both a positive and a negative emotion >= "
    "eval.contradiction_threshold. ECE: equal-width confidence bins (eval.ece_bins)."
)


# The ablation's built-in arms (`cmhl-ablation --arms`): name -> (description, overrides);
# `ce_only` is the reference every other arm is compared with.
ABLATION_ARMS = {
    "ce_only": ("CE on emotion only", ["loss.alpha=0", "loss.beta=0", "loss.lam=0"]),
    "aux_heads": ("+ valence/intensity heads", ["loss.lam=0"]),
    "cmhl_sum": ("+ exclusivity, sum (paper)", ["loss.variant=sum"]),
    "cmhl_product": ("+ exclusivity, product", ["loss.variant=product"]),
    "cmhl_min": ("+ exclusivity, min", ["loss.variant=min"]),
}


def default_config_blocks() -> dict[str, ml_collections.ConfigDict]:
    """The task's own config blocks: `affect` (label knowledge), `loss`, and the contradiction
    threshold of its report (added to the generic `eval` block)."""
    loss = ml_collections.ConfigDict()
    loss.alpha = 0.5  # CE_valence weight (chosen)
    loss.beta = 0.5  # CE_intensity weight (chosen)
    loss.lam = 0.4  # exclusivity weight (paper)
    loss.variant = "sum"  # sum (paper), product, min
    # The loss function: "cmhl" (built-in, cmhl_jax/tasks/emotion/loss.py) or MODULE:FUNCTION,
    # a plug-in with the signature loss_fn(logits, labels, weights, tables, normalizer, cfg).
    loss.fn = "cmhl"
    evaluation = ml_collections.ConfigDict({"contradiction_threshold": 0.25})
    return {"affect": default_affect_config(), "loss": loss, "eval": evaluation}


def loss_fn_name(config) -> str:
    """`loss.fn`; runs written before plug-in losses existed have none (e.g. the configs kept
    in docs/results_emotion): the built-in."""
    return config.loss.get("fn", "cmhl")


def validate(config) -> list[str]:
    """The emotion blocks' problems (empty: none): loss weights and form, affect tables."""
    loss, errors = config.loss, []
    for name in ("alpha", "beta", "lam"):
        check(errors, loss[name] >= 0, f"loss.{name} must be >= 0, got {loss[name]}")
    check(
        errors,
        loss_fn_name(config) != "cmhl" or loss.variant in EXCLUSIVITY_VARIANTS,
        f"loss.variant must be one of {EXCLUSIVITY_VARIANTS}, got {loss.variant!r}",
    )
    try:
        build_affect_tables(config.affect)
    except ValueError as err:
        errors.append(str(err))
    return errors


def _example_loss_args(sizes: dict[str, int], arrays: dict, loss_cfg) -> tuple:
    """Shape-only inputs for checking a loss function before training."""
    batch = 2
    logits = {name: jnp.zeros((batch, size), jnp.float32) for name, size in sizes.items()}
    labels = jnp.zeros((batch,), jnp.int32)
    weights = jnp.ones((batch,), jnp.float32)
    return logits, labels, weights, arrays, jnp.float32(batch), loss_cfg


def _pair_ids(tables) -> tuple[list[int], list[int]]:
    """The ids of the positive set P and of the negative set N (from the pair mask)."""
    mask = np.asarray(tables.pair_mask)
    return [int(i) for i in np.flatnonzero(mask.any(1))], [
        int(j) for j in np.flatnonzero(mask.any(0))
    ]


def make_task(config) -> Task:
    raise_problems(validate(config))
    tables = build_affect_tables(config.affect)
    arrays = {k: jnp.asarray(v) for k, v in loss_tables(tables).items()}
    head_labels = {
        "emotion": tables.emotion_names,
        "valence": tables.valence_names,
        "intensity": tables.intensity_names,
    }
    sizes = {name: len(labels) for name, labels in head_labels.items()}
    loss_cfg, evaluation = config.loss, config.eval
    loss_fn = resolved_loss_fn(
        loss_fn_name(config), BUILTIN_LOSSES, _example_loss_args(sizes, arrays, loss_cfg)
    )
    positive_ids, negative_ids = _pair_ids(tables)

    def loss(outputs, head_params, labels, weights, normalizer):
        del head_params
        return loss_fn(outputs, labels, weights.astype(jnp.float32), arrays, normalizer, loss_cfg)

    def report(probs, labels, reference=None):
        del reference  # nothing is fixed on the validation split
        return emotion_report(
            probs,
            labels,
            tables,
            threshold=evaluation.contradiction_threshold,
            bins=evaluation.ece_bins,
        )

    def bootstrap_inputs(probs, labels):
        return stats.per_text_inputs(
            labels,
            probs,
            positive_ids,
            negative_ids,
            evaluation.contradiction_threshold,
            evaluation.ece_bins,
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
        head_labels=head_labels,
        selection_metric=config.checkpoint.metric,
        prediction_key="emotion",
        summary_metrics=SUMMARY_METRICS,
        tables=tables,
        record_extras=consistency if positive_ids and negative_ids else None,
        table_metrics=TABLE_METRICS,
        table_note=TABLE_NOTE,
        bootstrap_inputs=bootstrap_inputs,
    )
