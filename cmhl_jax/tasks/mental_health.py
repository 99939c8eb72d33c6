"""The mental-health task (CMHL_SPEC section 2): SWMH's five subreddits and three intensity levels.

Building blocks only, all pure: the config block and its label tables, the gated heads

    z_M = W_M h + b_M,  z_I = W_I h + b_I,  z = [z_M; z_I]
    a = softmax(W2 tanh(W1 z + b1) + b2),  z~ = [a1 z_M; a2 z_I],  y^ = softmax(W_o z~ + b_o)

the loss L = CE(y^, y) + w CE(softmax(z_I), s) with w = softplus(omega) learned, the validation
report with the paper's checkpoint selection score, and the task itself (`make_task`), with
early stopping on validation F1 (patience 3) and the CE-only single-head baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cmhl_jax import stats
from cmhl_jax.config import raise_problems
from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import weighted_cross_entropy
from cmhl_jax.metrics import ECE_BINS, classification_scores, expected_calibration_error
from cmhl_jax.tasks.base import EarlyStopping, Task, softmax_outputs

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
            "label_names": tuple(SWMH_LABELS),
            "level_names": ("low", "medium", "high"),
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


def mean_gate_by_class(gate: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """Mean gate weights [a1, a2] over the texts of each gold class (None: no such text)."""
    return {
        name: gate[labels == i].mean(0).tolist() if (labels == i).any() else None
        for i, name in enumerate(names)
    }


def mental_health_report(
    probs: Mapping[str, np.ndarray], labels: np.ndarray, config, *, bins: int = ECE_BINS
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


# ---------------------------------------------------------------------------------------------
# The task


# The ablation's built-in arms (`cmhl-ablation --arms`); `ce_only` is the reference.
ABLATION_ARMS = {
    "ce_only": ("CE, single head (baseline)", ["mental_health.single_head_baseline=true"]),
    "gated": ("gated primary + intensity heads (paper)", []),
}


def default_config_blocks() -> dict[str, ml_collections.ConfigDict]:
    """The task's own config block, `mental_health` (the loss has no hyper-parameters: its
    intensity weight is learned)."""
    return {"mental_health": default_mental_health_config()}


def validate(config) -> list[str]:
    """The mental-health block's problems (empty: none)."""
    mh = config.mental_health
    errors = []
    try:
        intensity_labels(mh)
    except ValueError as err:
        errors.append(str(err))
    if mh.selection.f1_metric not in SELECTION_F1_METRICS:
        errors.append(
            f"mental_health.selection.f1_metric must be one of {SELECTION_F1_METRICS}, "
            f"got {mh.selection.f1_metric!r}"
        )
    if mh.initial_loss_weight <= 0:
        errors.append(
            f"mental_health.initial_loss_weight must be > 0, got {mh.initial_loss_weight}"
        )
    if mh.early_stopping.patience < 0:
        errors.append("mental_health.early_stopping.patience must be >= 0 (0 disables)")
    return errors


def _gated_heads(config, levels, num_classes: int, num_levels: int) -> dict:
    """Task fields of the paper's gated model: heads, gate and the learned-weight loss."""
    mh = config.mental_health

    def init(key, hidden_size):
        return init_gated_heads(
            key, hidden_size, num_classes, num_levels, mh.gate_bottleneck, mh.initial_loss_weight
        )

    def loss(outputs, head_params, labels, weights, normalizer):
        return mental_health_loss(
            outputs, labels, levels, weights, head_params["loss_weight_raw"], normalizer
        )

    return dict(
        init_heads=init,
        apply_heads=apply_gated_heads,
        loss=loss,
        probabilities=lambda outputs: softmax_outputs(outputs, keep=("gate",)),
        head_sizes=(
            ("final", num_classes),
            ("gate", 2),
            ("intensity", num_levels),
            ("primary", num_classes),
            ("gate_bottleneck", int(mh.gate_bottleneck)),
        ),
    )


def _single_head(num_classes: int) -> dict:
    """Task fields of the CE-only baseline: one linear head, CE loss."""

    def loss(outputs, head_params, labels, weights, normalizer):
        del head_params
        ce = weighted_cross_entropy(
            outputs["final"], labels, weights.astype(jnp.float32), normalizer
        )
        return ce, {"loss": ce, "ce_final": ce}

    return dict(
        init_heads=lambda key, hidden_size: init_heads(key, hidden_size, {"final": num_classes}),
        apply_heads=apply_heads,
        loss=loss,
        probabilities=softmax_outputs,
        head_sizes=(("final", num_classes),),
    )


def make_task(config) -> Task:
    """The gated multi-head model of spec 2, or with `single_head_baseline` the CE-only
    baseline; both select by `checkpoint.metric` and stop early on validation F1."""
    raise_problems(validate(config))
    mh = config.mental_health
    classes, levels = tuple(mh.label_names), tuple(mh.level_names)
    if mh.get("single_head_baseline", False):
        fields = _single_head(len(classes))
    else:
        fields = _gated_heads(config, jnp.asarray(intensity_labels(mh)), len(classes), len(levels))
    return Task(
        name="mental_health",
        label_names=classes,
        primary="final",
        report=lambda probs, labels, reference=None: mental_health_report(
            probs, labels, mh, bins=config.eval.ece_bins
        ),
        head_labels={"final": classes, "primary": classes, "intensity": levels},
        selection_metric=config.checkpoint.metric,
        table_metrics=("accuracy", "macro_f1", "weighted_f1", "ece"),
        bootstrap_inputs=lambda probs, labels: stats.classification_inputs(
            labels, probs, config.eval.ece_bins
        ),
        summary_metrics=(
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "macro_recall",
            "intensity_accuracy",
            "mean_confidence",
            "selection_score",
            "ece",
        ),
        early_stopping=EarlyStopping(mh.early_stopping.metric, mh.early_stopping.patience),
        **fields,
    )
