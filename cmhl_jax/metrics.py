"""Evaluation metrics (numpy, host side) every task shares: classification scores, calibration,
average precision and multi-label scores. A task's own report is in its package
(`cmhl_jax/tasks/<task>/`)."""

from __future__ import annotations

import numpy as np

# Equal-width confidence bins of the expected calibration error when none are given (the
# default of `config.eval.ece_bins`).
ECE_BINS = 15


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


def per_class_scores(class_names, precision, recall, f1, support) -> dict:
    """{class: {precision, recall, f1, support}} from per-class arrays."""
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }


def precision_recall_f1(true_pos, support, predicted):
    """Precision, recall and F1 (2PR / (P + R)) from counts of any shape, elementwise; 0 where
    undefined (scikit-learn's zero_division=0). Every F1 of the project comes from here."""
    true_pos, support, predicted = (
        np.asarray(x, np.float64) for x in (true_pos, support, predicted)
    )
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return precision, recall, f1


def classification_scores(labels, preds, class_names) -> dict:
    """Accuracy, macro/weighted F1, macro recall and per-class precision/recall/F1."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    matrix = confusion_matrix(labels, preds, len(class_names))
    support = matrix.sum(1).astype(np.float64)
    precision, recall, f1 = precision_recall_f1(np.diag(matrix), support, matrix.sum(0))
    return {
        "accuracy": float((labels == preds).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        "macro_recall": float(recall.mean()),
        "per_class": per_class_scores(class_names, precision, recall, f1, support),
        "confusion_matrix": matrix.tolist(),
    }


def ece_bin_index(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Each confidence's equal-width bin of [0, 1] (0 .. bins - 1; a bin includes its upper
    edge)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE with equal-width confidence bins: sum_b |B|/n * |accuracy(B) - confidence(B)|."""
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    index = ece_bin_index(confidence, bins)
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


# ---------------------------------------------------------------------------------------------
# Multi-label (GoEmotions): labels and predictions are 0/1 arrays [N, C].


def multilabel_scores(gold, pred, class_names) -> dict:
    """Macro/micro precision, recall and F1 over labels, and per-label scores (a label never
    predicted and never gold scores F1 0, as in scikit-learn's zero_division=0)."""
    gold, pred = np.asarray(gold) > 0, np.asarray(pred) > 0
    true_pos, support, predicted = (gold & pred).sum(0), gold.sum(0), pred.sum(0)
    precision, recall, f1 = precision_recall_f1(true_pos, support, predicted)
    micro_p, micro_r, micro_f1 = precision_recall_f1(true_pos.sum(), support.sum(), predicted.sum())
    return {
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "micro_f1": float(micro_f1),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "exact_match": float((gold == pred).all(1).mean()) if len(gold) else 0.0,
        "per_class": per_class_scores(class_names, precision, recall, f1, support),
    }


def map_multi_hot(multi_hot, mapping) -> np.ndarray:
    """Multi-hot rows [N, C] through a 0/1 map [C, K] to multi-hot rows [N, K] (a group is on
    when any of its labels is)."""
    return ((np.asarray(multi_hot) > 0).astype(np.int64) @ np.asarray(mapping, np.int64)) > 0


def mixed_valence(multi_hot, positive_ids, negative_ids) -> np.ndarray:
    """Per text: at least one positive AND at least one negative label on."""
    on = np.asarray(multi_hot) > 0
    return on[:, positive_ids].any(1) & on[:, negative_ids].any(1)


def multilabel_contradiction(gold, pred, positive_ids, negative_ids) -> dict:
    """Contradictions of multi-label predictions: a positive and a negative label both predicted.

    contradiction_rate = false_contradiction_rate + the share of texts with a predicted
    contradiction whose gold labels do mix; false_contradiction_rate counts texts whose gold
    labels have no (positive, negative) pair; mixed_recall is, of the texts whose gold labels do
    mix, the share where both a positive and a negative label are predicted (0 when none mix).
    """
    predicted, mixed = (mixed_valence(x, positive_ids, negative_ids) for x in (pred, gold))
    n = max(len(mixed), 1)
    return {
        "contradiction_rate": float(predicted.sum() / n),
        "false_contradiction_rate": float((predicted & ~mixed).sum() / n),
        "mixed_recall": float((predicted & mixed).sum() / mixed.sum()) if mixed.any() else 0.0,
        "gold_mixed_rate": float(mixed.sum() / n),
        "num_gold_mixed": int(mixed.sum()),
    }


def multilabel_ece(probs, gold, bins: int = ECE_BINS) -> float:
    """ECE over every (text, label) decision, each a binary prediction at 0.5 with confidence
    max(p, 1 - p)."""
    p = np.asarray(probs, np.float64).reshape(-1)
    binary = np.stack([1.0 - p, p], axis=-1)
    return expected_calibration_error(binary, (np.asarray(gold).reshape(-1) > 0).astype(int), bins)


def average_precision(scores, gold, weights=None, block: int = 50) -> np.ndarray:
    """Average precision of each column of `scores` [N, K] against 0/1 `gold` [N, K], as
    scikit-learn's `average_precision_score`: the sum over distinct score thresholds, highest
    first, of (R_t - R_{t-1}) * P_t. NaN for a column without positives.

    `weights` [R, N] (how often each text is counted, e.g. bootstrap resamples) gives [R, K];
    None gives [K]. Resamples are processed `block` at a time to bound memory.
    """
    scores, gold = np.asarray(scores, np.float64), np.asarray(gold) > 0
    single = weights is None
    weights = np.ones((1, len(scores))) if single else np.asarray(weights, np.float64)
    out = np.empty((len(weights), scores.shape[1]))
    for k in range(scores.shape[1]):
        order = np.argsort(-scores[:, k], kind="stable")
        ranked, hits = scores[order, k], gold[order, k]
        last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
        for start in range(0, len(weights), block):
            w = weights[start : start + block, order]
            true_pos = np.cumsum(w * hits, axis=1)[:, last_of_tie]
            seen = np.cumsum(w, axis=1)[:, last_of_tie]
            precision = np.divide(true_pos, seen, out=np.zeros_like(seen), where=seen > 0)
            gain = np.diff(true_pos, axis=1, prepend=0.0)
            positives = true_pos[:, -1]
            out[start : start + block, k] = np.divide(
                (gain * precision).sum(1),
                positives,
                out=np.full(len(positives), np.nan),
                where=positives > 0,
            )
    return out[0] if single else out


def tune_thresholds(probs, gold, grid=None) -> np.ndarray:
    """Per label, the threshold of `grid` (default 0.05, 0.10, ..., 0.95) with the best F1 on
    (probs, gold); ties keep the lowest threshold."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else np.asarray(grid)
    probs, gold = np.asarray(probs), np.asarray(gold) > 0
    best = np.zeros(probs.shape[1])
    for c in range(probs.shape[1]):
        pred = probs[:, c][None, :] >= grid[:, None]  # [T, N]
        tp = (pred & gold[:, c]).sum(1)
        f1 = 2 * tp / np.maximum(pred.sum(1) + gold[:, c].sum(), 1)
        best[c] = grid[int(np.argmax(f1))]
    return best
