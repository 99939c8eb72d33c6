"""Tasks: for each task, its heads, loss, probabilities and validation report.

A `Task` bundles pure functions built from the config; the model, the train step and the loop
call them without knowing which task runs. `emotion` is CMHL_SPEC section 1, `mental_health`
section 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from cmhl_jax.affect import build_affect_tables
from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import cmhl_loss, loss_tables, weighted_cross_entropy
from cmhl_jax.mental_health import (
    apply_gated_heads,
    init_gated_heads,
    intensity_labels,
    mental_health_loss,
    mental_health_report,
)
from cmhl_jax.metrics import emotion_report

TASKS = ("emotion", "mental_health")


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """What a task computes on top of the encoder's first-token states.

    init_heads(key, hidden_size) -> head params
    apply_heads(head_params, hidden, *, dropout_rate, rng) -> outputs (logits, gate, ...)
    loss(outputs, head_params, labels, weights, normalizer) -> (total, terms)
    probabilities(outputs) -> {name: probabilities or weights}
    report(probs as numpy, labels) -> validation metrics
    """

    name: str
    label_names: tuple[str, ...]
    primary: str  # the output holding the class prediction
    init_heads: Callable
    apply_heads: Callable
    loss: Callable
    probabilities: Callable
    report: Callable
    head_sizes: tuple[tuple[str, int], ...]


def _softmax_all(outputs: dict, keep: tuple[str, ...] = ()) -> dict:
    return {
        name: value if name in keep else jax.nn.softmax(value, axis=-1)
        for name, value in outputs.items()
    }


def emotion_task(config) -> Task:
    """Emotion (6), valence (3) and intensity (2) heads with the CMHL composite loss."""
    tables = build_affect_tables(config.affect)
    arrays = {k: jnp.asarray(v) for k, v in loss_tables(tables).items()}
    sizes = {
        "emotion": len(tables.emotion_names),
        "valence": len(tables.valence_names),
        "intensity": len(tables.intensity_names),
    }
    loss_cfg = config.loss

    def loss(outputs, head_params, labels, weights, normalizer):
        del head_params
        return cmhl_loss(
            outputs,
            labels,
            weights,
            arrays,
            loss_cfg.alpha,
            loss_cfg.beta,
            loss_cfg.lam,
            normalizer=normalizer,
            variant=loss_cfg.variant,
        )

    def report(probs, labels):
        return emotion_report(
            probs,
            labels,
            tables,
            threshold=config.eval.contradiction_threshold,
            bins=config.eval.ece_bins,
        )

    return Task(
        name="emotion",
        label_names=tables.emotion_names,
        primary="emotion",
        init_heads=lambda key, hidden_size: init_heads(key, hidden_size, sizes),
        apply_heads=apply_heads,
        loss=loss,
        probabilities=_softmax_all,
        report=report,
        head_sizes=tuple(sorted(sizes.items())),
    )


def mental_health_task(config) -> Task:
    """Primary (5) and intensity (3) heads, attention gate and final classifier (spec 2)."""
    mh = config.mental_health
    levels = jnp.asarray(intensity_labels(mh))
    num_classes, num_levels = len(mh.label_names), len(mh.level_names)

    if mh.get("single_head_baseline", False):
        return _single_head_baseline(config, num_classes)

    def init(key, hidden_size):
        return init_gated_heads(
            key,
            hidden_size,
            num_classes,
            num_levels,
            mh.gate_bottleneck,
            mh.initial_loss_weight,
        )

    def loss(outputs, head_params, labels, weights, normalizer):
        return mental_health_loss(
            outputs, labels, levels, weights, head_params["loss_weight_raw"], normalizer
        )

    return Task(
        name="mental_health",
        label_names=tuple(mh.label_names),
        primary="final",
        init_heads=init,
        apply_heads=apply_gated_heads,
        loss=loss,
        probabilities=lambda outputs: _softmax_all(outputs, keep=("gate",)),
        report=lambda probs, labels: mental_health_report(
            probs, labels, mh, bins=config.eval.ece_bins
        ),
        head_sizes=(
            ("final", num_classes),
            ("gate", 2),
            ("intensity", num_levels),
            ("primary", num_classes),
            ("gate_bottleneck", int(mh.gate_bottleneck)),
        ),
    )


def _single_head_baseline(config, num_classes: int) -> Task:
    """The CE-only baseline of the mental-health task: one linear head, CE loss."""
    mh = config.mental_health

    def loss(outputs, head_params, labels, weights, normalizer):
        del head_params
        ce = weighted_cross_entropy(
            outputs["final"], labels, weights.astype(jnp.float32), normalizer
        )
        return ce, {"loss": ce, "ce_final": ce}

    return Task(
        name="mental_health",
        label_names=tuple(mh.label_names),
        primary="final",
        init_heads=lambda key, hidden_size: init_heads(key, hidden_size, {"final": num_classes}),
        apply_heads=apply_heads,
        loss=loss,
        probabilities=_softmax_all,
        report=lambda probs, labels: mental_health_report(
            probs, labels, mh, bins=config.eval.ece_bins
        ),
        head_sizes=(("final", num_classes),),
    )


def make_task(config) -> Task:
    if config.task == "emotion":
        return emotion_task(config)
    if config.task == "mental_health":
        return mental_health_task(config)
    raise ValueError(f"unknown task {config.task!r}; choose one of {TASKS}")
