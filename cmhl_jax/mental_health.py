"""The mental-health task (CMHL_SPEC section 2): SWMH's five subreddits and three intensity levels.

Building blocks only, all pure: the config block and its label tables, the gated heads

    z_M = W_M h + b_M,  z_I = W_I h + b_I,  z = [z_M; z_I]
    a = softmax(W2 tanh(W1 z + b1) + b2),  z~ = [a1 z_M; a2 z_I],  y^ = softmax(W_o z~ + b_o)

the loss L = CE(y^, y) + w CE(softmax(z_I), s) with w = softplus(omega) learned, the validation
report with the paper's checkpoint selection score, and early stopping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import weighted_cross_entropy
from cmhl_jax.metrics import classification_scores, expected_calibration_error

# The label strings of SWMH (and of ../shared/data/reddit_mh), in class-id order.
SWMH_LABELS = (
    "self.depression",
    "self.SuicideWatch",
    "self.Anxiety",
    "self.bipolar",
    "self.offmychest",
)
SELECTION_F1_METRICS = ("macro_f1", "weighted_f1")


def default_mental_health_config() -> ml_collections.ConfigDict:
    """The spec's defaults (section 2); every "chosen" value is a field."""
    return ml_collections.ConfigDict(
        {
            "label_names": list(SWMH_LABELS),
            "level_names": ["low", "medium", "high"],
            # Chosen: the classes of each intensity level s (the paper does not give them).
            # Keyed by level because config keys cannot hold the dots of "self.<subreddit>".
            "intensity_of": {
                "low": ["self.offmychest"],
                "medium": ["self.Anxiety", "self.depression", "self.bipolar"],
                "high": ["self.SuicideWatch"],
            },
            # The CE-only single-head baseline: one linear head, loss CE(primary) alone.
            "single_head_baseline": False,
            "gate_bottleneck": 16,  # r, paper
            "initial_loss_weight": 0.5,  # w at step 0, chosen
            # Paper: score = 0.7 F1 + 0.3 mean confidence. Which F1 is not stated: chosen macro.
            "selection": {"f1_metric": "macro_f1", "f1_weight": 0.7, "confidence_weight": 0.3},
            # Paper: patience 3 on validation F1; 0 disables early stopping.
            "early_stopping": {"metric": "macro_f1", "patience": 3},
        }
    )


def intensity_labels(config: ml_collections.ConfigDict) -> np.ndarray:
    """Level id s of each class id [C] int32, from `config.intensity_of` (level -> classes),
    which must put every class in exactly one known level."""
    names, levels = list(config.label_names), list(config.level_names)
    unknown_levels = [level for level in config.intensity_of if level not in levels]
    if unknown_levels:
        raise ValueError(
            f"mental_health.intensity_of has unknown levels {unknown_levels}; known: {levels}"
        )
    level_of: dict[str, list[str]] = {}
    for level, classes in config.intensity_of.items():
        for name in classes:
            level_of.setdefault(name, []).append(level)
    unknown_classes = [name for name in level_of if name not in names]
    if unknown_classes:
        raise ValueError(
            f"mental_health.intensity_of names unknown classes {unknown_classes}; known: {names}"
        )
    missing = [name for name in names if name not in level_of]
    if missing:
        raise ValueError(f"mental_health.intensity_of puts {missing} in no level; need {names}")
    repeated = {name: found for name, found in level_of.items() if len(found) > 1}
    if repeated:
        raise ValueError(f"mental_health.intensity_of puts classes in several levels: {repeated}")
    return np.array([levels.index(level_of[name][0]) for name in names], np.int32)


# ---------------------------------------------------------------------------------------------
# Gated heads


def _lecun_linear(key: jax.Array, fan_in: int, fan_out: int) -> dict:
    """Flax's default Linear init (LeCun normal kernel, zero bias), for the small gate layers:
    BERT's N(0, 0.02) would make W_o nearly zero and starve z_M of gradient."""
    kernel = jax.random.normal(key, (fan_in, fan_out), jnp.float32) / math.sqrt(fan_in)
    return {"kernel": kernel, "bias": jnp.zeros((fan_out,), jnp.float32)}


def _linear(params: dict, x: jax.Array) -> jax.Array:
    return x @ params["kernel"] + params["bias"]


def inverse_softplus(value: float) -> float:
    """omega with softplus(omega) = value > 0."""
    return float(value + math.log(-math.expm1(-value)))


def init_gated_heads(
    key: jax.Array,
    hidden_size: int,
    num_classes: int,
    num_levels: int,
    bottleneck: int,
    initial_loss_weight: float,
) -> dict:
    """Parameters of the gated heads (spec 2): `primary` W_M, `intensity` W_I (BERT init, like
    heads.py), `gate_hidden` W1, `gate_out` W2, `final` W_o, and `loss_weight_raw` omega."""
    if initial_loss_weight <= 0:
        raise ValueError(f"initial_loss_weight must be > 0, got {initial_loss_weight}")
    k_heads, k_gate_hidden, k_gate_out, k_final = jax.random.split(key, 4)
    joint = num_classes + num_levels
    params = init_heads(k_heads, hidden_size, {"primary": num_classes, "intensity": num_levels})
    params["gate_hidden"] = _lecun_linear(k_gate_hidden, joint, bottleneck)
    params["gate_out"] = _lecun_linear(k_gate_out, bottleneck, 2)
    params["final"] = _lecun_linear(k_final, joint, num_classes)
    params["loss_weight_raw"] = jnp.asarray(inverse_softplus(initial_loss_weight), jnp.float32)
    return params


def feature_gate(gate_hidden: dict, gate_out: dict, joint: jax.Array) -> jax.Array:
    """Attention gate a = softmax(W2 tanh(W1 z + b1) + b2) over the two heads [..., 2]."""
    return jax.nn.softmax(_linear(gate_out, jnp.tanh(_linear(gate_hidden, joint))), axis=-1)


def gated_fusion(gate: jax.Array, primary: jax.Array, intensity: jax.Array) -> jax.Array:
    """Gated features z~ = [a1 z_M; a2 z_I]."""
    return jnp.concatenate([gate[..., :1] * primary, gate[..., 1:] * intensity], axis=-1)


def apply_gated_heads(
    params: dict, hidden: jax.Array, *, dropout_rate: float = 0.0, rng: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Logits `primary` z_M, `intensity` z_I, `final` W_o z~ + b_o and gate weights `gate` a,
    float32, for first-token states `hidden` [..., H] (dropout on h as in heads.py)."""
    heads = {name: params[name] for name in ("primary", "intensity")}
    logits = apply_heads(heads, hidden, dropout_rate=dropout_rate, rng=rng)
    joint = jnp.concatenate([logits["primary"], logits["intensity"]], axis=-1)
    gate = feature_gate(params["gate_hidden"], params["gate_out"], joint)
    fused = gated_fusion(gate, logits["primary"], logits["intensity"])
    return logits | {"gate": gate, "final": _linear(params["final"], fused)}


# ---------------------------------------------------------------------------------------------
# Loss


def learned_loss_weight(raw: jax.Array) -> jax.Array:
    """w = softplus(omega) > 0: an unconstrained learned weight would collapse to 0 (spec 2)."""
    return jax.nn.softplus(raw)


def weighted_task_loss(ce_final, ce_intensity, loss_weight) -> jax.Array:
    """L = CE(y^, y) + w CE(softmax(z_I), s) (spec 2)."""
    return ce_final + loss_weight * ce_intensity


@jax.jit
def mental_health_loss(
    logits: dict[str, jax.Array],
    labels: jax.Array,
    level_labels_table: jax.Array,
    weights: jax.Array,
    loss_weight_raw: jax.Array,
    normalizer: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and its terms. `labels` are class ids; the level targets s come from
    `level_labels_table` ([C], see `intensity_labels`). Weighted by the text mask like losses.py."""
    weights = weights.astype(jnp.float32)
    if normalizer is None:
        normalizer = jnp.maximum(weights.sum(), 1.0)
    ce_final = weighted_cross_entropy(logits["final"], labels, weights, normalizer)
    ce_intensity = weighted_cross_entropy(
        logits["intensity"], level_labels_table[labels], weights, normalizer
    )
    loss_weight = learned_loss_weight(loss_weight_raw)
    total = weighted_task_loss(ce_final, ce_intensity, loss_weight)
    terms = {
        "loss": total,
        "ce_final": ce_final,
        "ce_intensity": ce_intensity,
        "loss_weight": loss_weight,
    }
    return total, terms


# ---------------------------------------------------------------------------------------------
# Validation report, checkpoint selection, early stopping


def selection_score(report: Mapping, selection: Mapping) -> float:
    """Paper's checkpoint score: f1_weight * F1 + confidence_weight * mean confidence."""
    if selection["f1_metric"] not in SELECTION_F1_METRICS:
        raise ValueError(
            f"selection.f1_metric must be one of {SELECTION_F1_METRICS}, "
            f"got {selection['f1_metric']!r}"
        )
    return float(
        selection["f1_weight"] * report[selection["f1_metric"]]
        + selection["confidence_weight"] * report["mean_confidence"]
    )


def select_best(history: Sequence[Mapping], selection: Mapping) -> int:
    """Index of the validation report with the highest selection score (earliest on ties)."""
    if not history:
        raise ValueError("select_best needs at least one validation report")
    return int(np.argmax([selection_score(report, selection) for report in history]))


def mean_gate_by_class(gate: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """Mean gate weights [a1, a2] over the texts of each gold class (None: no such text)."""
    return {
        name: gate[labels == i].mean(0).tolist() if (labels == i).any() else None
        for i, name in enumerate(names)
    }


def mental_health_report(
    probs: Mapping[str, np.ndarray], labels: np.ndarray, config, *, bins: int = 15
) -> dict:
    """Validation metrics from `final` [N, C], `intensity` [N, L] probabilities and `gate` [N, 2]
    weights; `config` is the mental_health block. Includes `selection_score`."""
    names = list(config.label_names)
    labels = np.asarray(labels)
    final = np.asarray(probs["final"])
    report = classification_scores(labels, final.argmax(-1), names)
    report.update(
        num_examples=int(len(labels)),
        mean_confidence=float(final.max(-1).mean()),
        ece=expected_calibration_error(final, labels, bins),
    )
    if "intensity" in probs:  # absent in the single-head baseline
        level_preds = np.asarray(probs["intensity"]).argmax(-1)
        report["intensity_accuracy"] = float(
            (level_preds == intensity_labels(config)[labels]).mean()
        )
    if "gate" in probs:
        report["mean_gate"] = mean_gate_by_class(np.asarray(probs["gate"]), labels, names)
    report["selection_score"] = selection_score(report, config.selection)
    return report


@dataclasses.dataclass
class EarlyStopping:
    """Stops after `patience` consecutive epochs without a strictly better metric (higher is
    better); patience 0 never stops. `state_dict`/`from_state_dict` round-trip for resume."""

    patience: int = 3
    best: float | None = None
    bad_epochs: int = 0

    def update(self, metric: float) -> bool:
        """Records one epoch's validation metric; True when training should stop."""
        if self.best is None or metric > self.best:
            self.best, self.bad_epochs = float(metric), 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: Mapping) -> EarlyStopping:
        return cls(**state)
