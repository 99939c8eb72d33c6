"""The GoEmotions task's validation report from sigmoid probabilities and multi-hot gold rows."""

from __future__ import annotations

import numpy as np

from cmhl_jax.metrics import (
    ECE_BINS,
    average_precision,
    map_multi_hot,
    multilabel_contradiction,
    multilabel_ece,
    multilabel_scores,
    tune_thresholds,
)
from cmhl_jax.tasks.goemotions.labels import VALENCE_NAMES, group_names, label_map, valence_ids


def goemotions_report(
    probs: dict,
    labels: np.ndarray,
    *,
    granularity: str,
    thresholds,
    tune=False,
    tuned=None,
    bins=ECE_BINS,
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
