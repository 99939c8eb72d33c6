"""Evaluation metrics (numpy, host side): classification scores, calibration, consistency."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


def classification_scores(labels, preds, class_names) -> dict:
    """Accuracy, macro/weighted F1, macro recall and per-class precision/recall/F1."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    matrix = confusion_matrix(labels, preds, len(class_names))
    true_pos = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1).astype(np.float64)
    predicted = matrix.sum(0).astype(np.float64)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return {
        "accuracy": float((labels == preds).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        "macro_recall": float(recall.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum_b |B|/n * |accuracy(B) - confidence(B)|."""
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def contradiction_rate(probs, positive_ids, negative_ids, threshold: float) -> float:
    """Share of texts whose top positive-set AND top negative-set probabilities are both
    >= threshold (joy and anger at once)."""
    top_positive = probs[:, positive_ids].max(-1)
    top_negative = probs[:, negative_ids].max(-1)
    return float(((top_positive >= threshold) & (top_negative >= threshold)).mean())


def consistency_score(probs, positive_ids, negative_ids) -> np.ndarray:
    """Per text: 1 - min(top positive prob, top negative prob) * 2, in [0, 1]; 1 = consistent."""
    top_positive = probs[:, positive_ids].max(-1)
    top_negative = probs[:, negative_ids].max(-1)
    return 1.0 - 2.0 * np.minimum(top_positive, top_negative)


def emotion_report(probs: dict, labels: np.ndarray, tables, *, threshold=0.25, bins=15) -> dict:
    """Every emotion-task metric from head probabilities (`emotion`, `valence`, `intensity`)."""
    emotion = probs["emotion"]
    preds = emotion.argmax(-1)
    names = list(tables.emotion_names)
    positive = [names.index(e) for e in names if tables.pair_mask[names.index(e)].any()]
    negative = [names.index(e) for e in names if tables.pair_mask[:, names.index(e)].any()]
    report = classification_scores(labels, preds, names)
    valence_pred = probs["valence"].argmax(-1)
    intensity_pred = probs["intensity"].argmax(-1)
    report.update(
        num_examples=int(len(labels)),
        valence_accuracy=float((valence_pred == tables.valence_label[labels]).mean()),
        intensity_accuracy=float((intensity_pred == tables.intensity_label[labels]).mean()),
        head_agreement=float((valence_pred == tables.valence_label[preds]).mean()),
        contradiction_rate=contradiction_rate(emotion, positive, negative, threshold),
        ece=expected_calibration_error(emotion, labels, bins),
        mean_confidence=float(emotion.max(-1).mean()),
    )
    return report
