"""The GoEmotions task (docs/goemotions.md): multi-label emotions with sigmoid heads.

Demszky et al. (ACL 2020): 27 emotions + neutral, several labels per text. Heads:

* `emotion`: one sigmoid output per label of the chosen granularity (`all` 28 labels, `ekman`
  6 + neutral, `sentiment` positive / negative / ambiguous + neutral, through the official maps);
* `valence`: positive / negative / ambiguous / neutral from the official sentiment map, a
  multi-hot target (a text whose labels span several valences has several on), sigmoid + BCE.

Loss (`loss.fn=cmhl`, `loss.multilabel_cmhl`): (BCE_emotion + alpha * BCE_valence) / K
+ lam * L_excl, each BCE summed over its head's outputs, where L_excl is the paper's hinge
max(0, s(p_i, p_j) - tau_ij) over the (positive, negative) label pairs on sigmoid probabilities,
with tau_ij raised for pairs that co-occur in the training labels:

    tau_ij = min(tau0 + gain * r_ij / max_kl r_kl, 2),   r_ij = n_ij / min(n_i, n_j)

(n_i: training texts with label i, n_ij: with both; counted from the training split when
training starts and kept in the run's config, `goemotions.cooccurrence`). A label is predicted
when its probability reaches its threshold (0.3 as in the GoEmotions paper, or per-label
`goemotions.thresholds`).
Data: `.tsv` files in the official format (`text \\t ids \\t id`), read multi-hot over the 28
labels; the task maps them to the granularity itself.

The package: `labels` (the 28 labels, the Ekman and sentiment maps), `loss`, `report`, `tfds`
(the `cmhl_goemotions` TFDS builder) and here the config blocks, their checks and the task.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cmhl_jax import data as data_lib
from cmhl_jax import stats
from cmhl_jax.config import check, raise_problems
from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import EXCLUSIVITY_VARIANTS, exclusivity_per_text, resolved_loss_fn
from cmhl_jax.metrics import map_multi_hot, tune_thresholds
from cmhl_jax.tasks.base import Task
from cmhl_jax.tasks.goemotions.labels import (
    EKMAN_MAPPING,
    EMOTIONS,
    GRANULARITIES,
    NEUTRAL,
    SENTIMENT_MAPPING,
    VALENCE_NAMES,
    cooccurrence_counts,
    group_names,
    label_map,
    valence_ids,
    valence_of,
)
from cmhl_jax.tasks.goemotions.loss import adaptive_tau, loss_arrays, multilabel_cmhl
from cmhl_jax.tasks.goemotions.report import goemotions_report

__all__ = [
    "EKMAN_MAPPING",
    "EMOTIONS",
    "GRANULARITIES",
    "NEUTRAL",
    "SENTIMENT_MAPPING",
    "VALENCE_NAMES",
    "adaptive_tau",
    "cooccurrence_counts",
    "count_training_labels",
    "FITTED_KEYS",
    "default_config_blocks",
    "default_goemotions_config",
    "goemotions_report",
    "group_names",
    "label_map",
    "loss_arrays",
    "make_task",
    "validate",
    "valence_ids",
    "valence_of",
]

BUILTIN_LOSSES = {"cmhl": multilabel_cmhl}


# The ablation's built-in arms (`cmhl-ablation --arms`); `ce_only` is the reference.
ABLATION_ARMS = {
    "ce_only": ("BCE on the emotion head only", ["loss.alpha=0", "loss.lam=0"]),
    "valence_aux": ("+ valence head", ["loss.lam=0"]),
    "valence_sg": (
        "+ valence head as a probe (no gradient into the encoder)",
        ["loss.lam=0", "goemotions.valence_stop_gradient=true"],
    ),
    "cmhl": ("+ valence head and the exclusivity hinge (the config's setting)", []),
}


# Config fields `count_training_labels` fills from the training split (a function of the data,
# like `data.local_dir`: not compared when a stored run is matched to a config).
FITTED_KEYS = ("goemotions.cooccurrence",)


def count_training_labels(config) -> None:
    """Fills `goemotions.cooccurrence` from the training split, once (a run's config keeps it,
    so evaluation and prediction need no training data). Milliseconds for GoEmotions' 43k
    texts."""
    ge = config.goemotions
    if len(ge.cooccurrence):
        return
    data_cfg = config.data
    train = data_lib.load_split(
        data_lib.split_spec(data_cfg, data_cfg.train_split),
        list(EMOTIONS),
        skip_bad_lines=data_cfg.skip_bad_lines,
    )
    ge.cooccurrence = cooccurrence_counts(train.labels, ge.granularity).tolist()


def default_goemotions_config() -> ml_collections.ConfigDict:
    """The task's own block; every chosen value is a field (docs/goemotions.md)."""
    return ml_collections.ConfigDict(
        {
            "granularity": "all",  # all (28 labels), ekman (6 + neutral), sentiment (3 + neutral)
            "threshold": 0.3,  # GoEmotions paper: a label is predicted at p >= 0.3
            # Per-label thresholds (one per output label) replacing `threshold`, e.g. the
            # `tuned_thresholds` of a dev report; empty: `threshold` for every label.
            "thresholds": [],
            # Report per-label thresholds tuned on the validation split (dev) and the F1 at
            # them; `eval.py` applies a run's dev-tuned thresholds to any other split.
            "tune_thresholds": True,
            # chosen: with loss.variant=min the hinge fires when both labels of a pair are
            # above tau/2 = 0.3, the prediction threshold: on texts predicted contradictory.
            "tau0": 0.6,
            "cooccurrence_gain": 0.5,  # chosen: tau of the most co-occurring pair = tau0 + gain
            # chosen: every emotion output starts at this probability (its bias at the
            # log-odds), near GoEmotions' label rates, not 0.5: at 0.5 every (positive,
            # negative) pair is past tau0 / 2 and the hinge pushes every label down at once
            # before anything is learned. 0 keeps the zero bias.
            "initial_probability": 0.05,
            # Train the valence head on the encoder's output without passing its gradient
            # into the encoder (a probe): the encoder then learns from the emotion loss and
            # the hinge only.
            "valence_stop_gradient": False,
            # Texts per label pair [K, K] (diagonal: per label) of the training split at the
            # granularity; filled when training starts (`count_training_labels`). Empty: the
            # flat tau0 (as if no pair co-occurred).
            "cooccurrence": [],
        }
    )


def default_config_blocks() -> dict[str, ml_collections.ConfigDict]:
    """The task's own config blocks: `goemotions` and `loss` (the multi-label CMHL loss)."""
    loss = ml_collections.ConfigDict()
    loss.alpha = 0.5  # valence head's weight per text against the emotion head's (chosen)
    loss.lam = 0.4  # exclusivity weight
    loss.variant = "sum"  # sum (paper), product, min
    # The loss function: "cmhl" (built-in, cmhl_jax/tasks/goemotions/loss.py) or
    # MODULE:FUNCTION, a plug-in with the signature of `multilabel_cmhl`.
    loss.fn = "cmhl"
    return {"goemotions": default_goemotions_config(), "loss": loss}


def validate(config) -> list[str]:
    """The goemotions and loss blocks' problems (empty: none)."""
    ge, loss, errors = config.goemotions, config.loss, []
    if ge.granularity not in GRANULARITIES:
        errors.append(
            f"goemotions.granularity must be one of {GRANULARITIES}, got {ge.granularity!r}"
        )
    elif ge.thresholds and len(ge.thresholds) != len(group_names(ge.granularity)):
        errors.append(
            f"goemotions.thresholds has {len(ge.thresholds)} values, the {ge.granularity} "
            f"granularity {len(group_names(ge.granularity))} labels"
        )
    if not 0 < ge.threshold < 1 or any(not 0 < t < 1 for t in ge.thresholds):
        errors.append("goemotions thresholds must be in (0, 1)")
    if not 0 <= ge.initial_probability < 1:
        errors.append("goemotions.initial_probability must be in [0, 1)")
    if not 0 <= ge.tau0 <= 2 or ge.cooccurrence_gain < 0:
        errors.append("goemotions.tau0 must be in [0, 2] and cooccurrence_gain >= 0")
    size = len(group_names(ge.granularity)) if ge.granularity in GRANULARITIES else None
    counts = np.asarray(ge.cooccurrence)
    if size and counts.size and counts.shape != (size, size):
        errors.append(
            f"goemotions.cooccurrence has shape {counts.shape}, the {ge.granularity} "
            f"granularity needs ({size}, {size})"
        )
    for name in ("alpha", "lam"):
        check(errors, loss[name] >= 0, f"loss.{name} must be >= 0, got {loss[name]}")
    if loss.fn == "cmhl" and loss.variant not in EXCLUSIVITY_VARIANTS:
        errors.append(f"loss.variant must be one of {EXCLUSIVITY_VARIANTS}")
    return errors


SUMMARY_METRICS = (
    "macro_f1",
    "macro_ap",
    "tuned_macro_f1",
    "micro_f1",
    "micro_ap",
    "contradiction_rate",
    "false_contradiction_rate",
    "mixed_recall",
    "ekman_macro_f1",
    "sentiment_macro_f1",
    "ece",
)
TABLE_METRICS = (
    "macro_f1",
    "tuned_macro_f1",
    "macro_ap",
    "micro_ap",
    "micro_f1",
    "contradiction_rate",
    "false_contradiction_rate",
    "mixed_recall",
    "ece",
)


TABLE_NOTE = (
    "Labels predicted at their thresholds (goemotions.threshold / thresholds). "
    "Contradiction: share of texts with a positive and a negative label predicted; "
    "false contradiction: those whose gold labels have no such pair (share of all "
    "texts); mixed recall: of the texts whose gold labels mix positive and negative, "
    "the share with both predicted. ECE: every (text, label) decision, {bins} bins."
)


def _example_loss_args(sizes: dict[str, int], arrays: dict, loss_cfg) -> tuple:
    """Shape-only inputs for checking a loss function before training."""
    return (
        {name: jnp.zeros((2, size), jnp.float32) for name, size in sizes.items()},
        jnp.zeros((2, sizes["emotion"]), jnp.float32),
        jnp.ones((2,), jnp.float32),
        arrays,
        jnp.float32(2),
        loss_cfg,
    )


def _record_extras(groups, thresholds, valence_threshold):
    """Per-text `labels` (predicted at their thresholds) and `valence_labels`."""

    def extras(probs):
        emotion = np.asarray(probs["emotion"]) >= thresholds
        out = {"labels": [[groups[i] for i in np.flatnonzero(row)] for row in emotion]}
        if "valence" in probs:
            on = np.asarray(probs["valence"]) >= valence_threshold
            out["valence_labels"] = [[VALENCE_NAMES[i] for i in np.flatnonzero(r)] for r in on]
        return out

    return extras


def _init_heads(key, hidden_size: int, *, sizes: dict, probability: float) -> dict:
    """Linear heads (`heads.init_heads`), the emotion biases at logit(`probability`)."""
    params = init_heads(key, hidden_size, sizes)
    if probability:
        bias = params["emotion"]["bias"]
        params["emotion"]["bias"] = jnp.full_like(bias, np.log(probability / (1 - probability)))
    return params


def _apply_heads(params, hidden, *, dropout_rate=0.0, rng=None, detach_valence=False):
    """`heads.apply_heads`; with `detach_valence` the valence head reads the encoder's output
    through a stop-gradient (same dropout mask)."""
    if not detach_valence:
        return apply_heads(params, hidden, dropout_rate=dropout_rate, rng=rng)
    emotion = {k: v for k, v in params.items() if k != "valence"}
    out = apply_heads(emotion, hidden, dropout_rate=dropout_rate, rng=rng)
    detached = jax.lax.stop_gradient(hidden)
    valence = {"valence": params["valence"]}
    return {**out, **apply_heads(valence, detached, dropout_rate=dropout_rate, rng=rng)}


def make_task(config) -> Task:
    raise_problems(validate(config))
    ge, loss_cfg, bins = config.goemotions, config.loss, config.eval.ece_bins
    granularity = ge.granularity
    groups = group_names(granularity)
    to_groups = jnp.asarray(label_map(granularity))
    arrays = loss_arrays(ge)
    sizes = {"emotion": len(groups), "valence": len(VALENCE_NAMES)}
    loss_fn = resolved_loss_fn(
        loss_cfg.fn, BUILTIN_LOSSES, _example_loss_args(sizes, arrays, loss_cfg)
    )
    thresholds = np.asarray(ge.thresholds or [ge.threshold] * len(groups), np.float32)
    positive_ids, negative_ids = valence_ids(granularity)

    def loss(outputs, head_params, labels, weights, normalizer):
        del head_params
        targets = jnp.minimum(labels.astype(jnp.float32) @ to_groups, 1.0)
        return loss_fn(outputs, targets, weights.astype(jnp.float32), arrays, normalizer, loss_cfg)

    def probabilities(outputs):
        return {name: jax.nn.sigmoid(value) for name, value in outputs.items()}

    def report(probs, labels, reference=None):
        """`reference`: the selected checkpoint's validation report, whose tuned thresholds
        score this split (else they are tuned on it)."""
        tuned = (reference or {}).get("tuned_thresholds") if ge.tune_thresholds else None
        out = goemotions_report(
            probs,
            labels,
            granularity=granularity,
            thresholds=thresholds,
            tune=bool(ge.tune_thresholds),
            tuned=tuned,
            bins=bins,
        )
        active = exclusivity_per_text(
            np.asarray(probs["emotion"]), arrays["pair_mask"], arrays["tau"], loss_cfg.variant
        )
        out["hinge_active_rate"] = float(np.mean(np.asarray(active) > 0)) if len(labels) else 0.0
        return out

    def bootstrap_inputs(probs, labels):
        gold = map_multi_hot(labels, label_map(granularity))
        tuned = tune_thresholds(probs, gold) if ge.tune_thresholds else None
        return stats.multilabel_inputs(
            gold, probs, thresholds, positive_ids, negative_ids, bins, tuned
        )

    return Task(
        name="goemotions",
        label_names=EMOTIONS,  # the data's label ids (the 28 of emotions.txt)
        primary="emotion",
        init_heads=functools.partial(_init_heads, sizes=sizes, probability=ge.initial_probability),
        apply_heads=functools.partial(_apply_heads, detach_valence=ge.valence_stop_gradient),
        loss=loss,
        probabilities=probabilities,
        report=report,
        head_sizes=tuple(sorted(sizes.items())),
        head_labels={"emotion": groups, "valence": VALENCE_NAMES},
        selection_metric=config.checkpoint.metric,
        prediction_key="top_emotion",
        summary_metrics=SUMMARY_METRICS,
        record_extras=_record_extras(groups, thresholds, ge.threshold),
        table_metrics=TABLE_METRICS,
        table_note=TABLE_NOTE.format(bins=bins),
        bootstrap_inputs=bootstrap_inputs,
    )
