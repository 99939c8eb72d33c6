"""The GoEmotions task (docs/goemotions.md): multi-label emotions with sigmoid heads.

Demszky et al. (ACL 2020): 27 emotions + neutral, several labels per text. Heads:

* `emotion`: one sigmoid output per label of the chosen granularity (`all` 28 labels, `ekman`
  6 + neutral, `sentiment` positive / negative / ambiguous + neutral, through the official maps);
* `valence`: positive / negative / ambiguous / neutral from the official sentiment map, a
  multi-hot target (a text whose labels span several valences has several on), sigmoid + BCE.

Loss (`loss.fn=cmhl`, `cmhl_jax.losses.multilabel_cmhl`): (BCE_emotion + alpha * BCE_valence) / K
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
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cmhl_jax import data as data_lib
from cmhl_jax import stats
from cmhl_jax.config import ConfigError
from cmhl_jax.heads import apply_heads, init_heads
from cmhl_jax.losses import (
    EXCLUSIVITY_VARIANTS,
    check_loss_fn,
    exclusivity_per_text,
    multilabel_cmhl,
    resolve_loss_fn,
)
from cmhl_jax.metrics import (
    average_precision,
    map_multi_hot,
    multilabel_contradiction,
    multilabel_ece,
    multilabel_scores,
    tune_thresholds,
)
from cmhl_jax.tasks.base import Task

# The official label files (google-research goemotions/data; copies in ../shared/data/goemotions).
EMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip
EKMAN_MAPPING = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": (
        "joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief",
        "pride", "admiration", "desire", "caring",
    ),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
}  # fmt: skip
SENTIMENT_MAPPING = {
    "positive": (
        "amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride",
        "admiration", "gratitude", "relief", "approval",
    ),
    "negative": (
        "fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief",
        "disgust", "anger", "annoyance", "disapproval",
    ),
    "ambiguous": ("realization", "surprise", "curiosity", "confusion"),
}  # fmt: skip
NEUTRAL = "neutral"
VALENCE_NAMES = ("positive", "negative", "ambiguous", NEUTRAL)
GRANULARITIES = ("all", "ekman", "sentiment")


def group_names(granularity: str) -> tuple[str, ...]:
    """The output labels of a granularity, in head order."""
    if granularity == "all":
        return EMOTIONS
    if granularity == "ekman":
        return (*EKMAN_MAPPING, NEUTRAL)
    if granularity == "sentiment":
        return VALENCE_NAMES
    raise ValueError(f"goemotions.granularity must be one of {GRANULARITIES}, got {granularity!r}")


def _group_of(granularity: str) -> dict[str, str]:
    """Each of the 28 labels to its group at `granularity` (neutral stays neutral)."""
    if granularity == "all":
        return {e: e for e in EMOTIONS}
    mapping = EKMAN_MAPPING if granularity == "ekman" else SENTIMENT_MAPPING
    group = {e: g for g, members in mapping.items() for e in members}
    return {e: group.get(e, NEUTRAL) for e in EMOTIONS}


def label_map(granularity: str, source: Sequence[str] = EMOTIONS) -> np.ndarray:
    """0/1 [len(source), K]: each `source` label (one of the 28, or a group of a coarser
    granularity) to its group at `granularity`."""
    groups = group_names(granularity)
    fine = _group_of(granularity)
    # A coarser source label (an Ekman group or a sentiment) maps through any of its members.
    members: dict[str, str] = {}
    for level in GRANULARITIES:
        for e, g in _group_of(level).items():
            members.setdefault(g, e)
    matrix = np.zeros((len(source), len(groups)), np.float32)
    for i, name in enumerate(source):
        matrix[i, groups.index(fine[members[name]])] = 1.0
    return matrix


def valence_of(granularity: str) -> np.ndarray:
    """Valence id (VALENCE_NAMES) of each output label at `granularity` [K]."""
    valence = _group_of("sentiment")
    example = {g: e for e, g in _group_of(granularity).items()}  # any member of each group
    return np.asarray(
        [VALENCE_NAMES.index(valence[example[g]]) for g in group_names(granularity)], np.int32
    )


def valence_ids(granularity: str) -> tuple[list[int], list[int]]:
    """The (positive, negative) label ids at the granularity (the official sentiment map)."""
    valence = valence_of(granularity)
    return tuple(
        [int(i) for i in np.flatnonzero(valence == VALENCE_NAMES.index(name))]
        for name in ("positive", "negative")
    )


def cooccurrence_counts(multi_hot: np.ndarray, granularity: str) -> np.ndarray:
    """Texts per label pair [K, K] at `granularity` from 28-label multi-hot rows; the diagonal
    holds the texts per label."""
    on = map_multi_hot(multi_hot, label_map(granularity)).astype(np.int64)
    return on.T @ on


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
            # Texts per label pair [K, K] (diagonal: per label) of the training split at the
            # granularity; filled when training starts (`count_training_labels`). Empty: the
            # flat tau0 (as if no pair co-occurred).
            "cooccurrence": [],
        }
    )


def validate(config) -> None:
    ge, errors = config.goemotions, []
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
    if not 0 <= ge.tau0 <= 2 or ge.cooccurrence_gain < 0:
        errors.append("goemotions.tau0 must be in [0, 2] and cooccurrence_gain >= 0")
    size = len(group_names(ge.granularity)) if ge.granularity in GRANULARITIES else None
    counts = np.asarray(ge.cooccurrence)
    if size and counts.size and counts.shape != (size, size):
        errors.append(
            f"goemotions.cooccurrence has shape {counts.shape}, the {ge.granularity} "
            f"granularity needs ({size}, {size})"
        )
    if config.loss.fn == "cmhl" and config.loss.variant not in EXCLUSIVITY_VARIANTS:
        errors.append(f"loss.variant must be one of {EXCLUSIVITY_VARIANTS}")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


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


def checked_loss_fn(loss_cfg, sizes: dict[str, int], arrays: dict):
    """`loss.fn` (the built-in multi-label CMHL loss or a plug-in), checked on an example."""
    loss_fn = multilabel_cmhl if loss_cfg.fn == "cmhl" else resolve_loss_fn(loss_cfg.fn)
    example = (
        {name: jnp.zeros((2, size), jnp.float32) for name, size in sizes.items()},
        jnp.zeros((2, sizes["emotion"]), jnp.float32),
        jnp.ones((2,), jnp.float32),
        arrays,
        jnp.float32(2),
        loss_cfg,
    )
    check_loss_fn(loss_fn, loss_cfg.fn, example)
    return loss_fn


def make_task(config) -> Task:
    validate(config)
    ge = config.goemotions
    granularity = ge.granularity
    groups = group_names(granularity)
    to_groups = jnp.asarray(label_map(granularity))
    arrays = loss_arrays(ge)
    sizes = {"emotion": len(groups), "valence": len(VALENCE_NAMES)}
    loss_cfg = config.loss
    loss_fn = checked_loss_fn(loss_cfg, sizes, arrays)
    thresholds = np.asarray(ge.thresholds or [ge.threshold] * len(groups), np.float32)

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
            bins=config.eval.ece_bins,
        )
        active = exclusivity_per_text(
            np.asarray(probs["emotion"]), arrays["pair_mask"], arrays["tau"], loss_cfg.variant
        )
        out["hinge_active_rate"] = float(np.mean(np.asarray(active) > 0)) if len(labels) else 0.0
        return out

    positive_ids, negative_ids = valence_ids(granularity)

    def bootstrap_inputs(probs, labels):
        gold = map_multi_hot(labels, label_map(granularity))
        tuned = tune_thresholds(probs, gold) if ge.tune_thresholds else None
        return stats.multilabel_inputs(
            gold, probs, thresholds, positive_ids, negative_ids, config.eval.ece_bins, tuned
        )

    def extras(probs):
        emotion = np.asarray(probs["emotion"]) >= thresholds
        out = {"labels": [[groups[i] for i in np.flatnonzero(row)] for row in emotion]}
        if "valence" in probs:
            on = np.asarray(probs["valence"]) >= ge.threshold
            out["valence_labels"] = [[VALENCE_NAMES[i] for i in np.flatnonzero(r)] for r in on]
        return out

    return Task(
        name="goemotions",
        label_names=EMOTIONS,  # the data's label ids (the 28 of emotions.txt)
        primary="emotion",
        init_heads=lambda key, hidden_size: init_heads(key, hidden_size, sizes),
        apply_heads=apply_heads,
        loss=loss,
        probabilities=probabilities,
        report=report,
        head_sizes=tuple(sorted(sizes.items())),
        head_labels={"emotion": groups, "valence": VALENCE_NAMES},
        selection_metric=config.checkpoint.metric,
        prediction_key="top_emotion",
        summary_metrics=SUMMARY_METRICS,
        record_extras=extras,
        table_metrics=TABLE_METRICS,
        table_note=(
            "Labels predicted at their thresholds (goemotions.threshold / thresholds). "
            "Contradiction: share of texts with a positive and a negative label predicted; "
            "false contradiction: those whose gold labels have no such pair (share of all "
            "texts); mixed recall: of the texts whose gold labels mix positive and negative, "
            "the share with both predicted. ECE: every (text, label) decision, 15 bins."
        ),
        bootstrap_inputs=bootstrap_inputs,
    )


def goemotions_report(
    probs: dict,
    labels: np.ndarray,
    *,
    granularity: str,
    thresholds,
    tune=False,
    tuned=None,
    bins=15,
) -> dict:
    """Every GoEmotions metric from sigmoid probabilities and 28-label multi-hot gold rows.

    With `tune`, `tuned_macro_f1` / `tuned_micro_f1` score the labels at per-label thresholds:
    `tuned` (tuned on another split: the run's dev) or, when None, tuned on this split
    (`tuned_thresholds`; optimistic, for dev only)."""
    groups = group_names(granularity)
    emotion = np.asarray(probs["emotion"])
    labels = np.asarray(labels)
    gold = map_multi_hot(labels, label_map(granularity))
    pred = emotion >= np.asarray(thresholds)
    positive, negative = valence_ids(granularity)
    report = multilabel_scores(gold, pred, groups)
    report["num_examples"] = int(len(labels))
    label_ap = average_precision(emotion, gold)
    report["macro_ap"] = float(np.nanmean(label_ap)) if np.isfinite(label_ap).any() else 0.0
    report["micro_ap"] = float(average_precision(emotion.reshape(-1, 1), gold.reshape(-1, 1))[0])
    for name, ap in zip(groups, label_ap.tolist(), strict=True):
        report["per_class"][name]["ap"] = None if np.isnan(ap) else ap
    gold_sentiment = map_multi_hot(labels, label_map("sentiment"))
    pred_sentiment = map_multi_hot(pred, label_map("sentiment", groups))
    sentiment_scores = multilabel_scores(gold_sentiment, pred_sentiment, VALENCE_NAMES)
    report["sentiment_macro_f1"] = sentiment_scores["macro_f1"]
    if granularity != "sentiment":  # sentiment groups do not map back to Ekman groups
        ekman = group_names("ekman")
        gold_ekman = map_multi_hot(labels, label_map("ekman"))
        pred_ekman = map_multi_hot(pred, label_map("ekman", groups))
        report["ekman_macro_f1"] = multilabel_scores(gold_ekman, pred_ekman, ekman)["macro_f1"]
    report.update(multilabel_contradiction(gold, pred, positive, negative))
    report["ece"] = multilabel_ece(emotion, gold, bins)
    report["labels_per_text"] = float(pred.sum(1).mean()) if len(pred) else 0.0
    report["no_label_rate"] = float((~pred.any(1)).mean()) if len(pred) else 0.0
    if "valence" in probs:
        valence_pred = np.asarray(probs["valence"]) >= float(np.min(thresholds))
        valence_scores = multilabel_scores(gold_sentiment, valence_pred, VALENCE_NAMES)
        report["valence_macro_f1"] = valence_scores["macro_f1"]
    if tune:
        report["thresholds_tuned_on"] = "this split" if tuned is None else "validation"
        tuned = tune_thresholds(emotion, gold) if tuned is None else np.asarray(tuned)
        tuned_scores = multilabel_scores(gold, emotion >= tuned, groups)
        report["tuned_thresholds"] = [float(t) for t in tuned]
        report["tuned_macro_f1"] = tuned_scores["macro_f1"]
        report["tuned_micro_f1"] = tuned_scores["micro_f1"]
    return report
