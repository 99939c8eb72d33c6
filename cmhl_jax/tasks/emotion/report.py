"""The emotion task's validation report: the usual scores, head accuracies, the contradiction
rate and calibration, and the per-text consistency score of predictions."""

from __future__ import annotations

import numpy as np

from cmhl_jax.metrics import ECE_BINS, classification_scores, expected_calibration_error


def contradiction_rate(probs, positive_ids, negative_ids, threshold: float) -> float:
    """Share of texts whose top positive-set AND top negative-set probabilities are both
    >= threshold (a positive and a negative emotion at once)."""
    top_positive = probs[:, positive_ids].max(-1)
    top_negative = probs[:, negative_ids].max(-1)
    return float(((top_positive >= threshold) & (top_negative >= threshold)).mean())


def consistency_score(probs, positive_ids, negative_ids) -> np.ndarray:
    """Per text: 1 - min(top positive prob, top negative prob) * 2, in [0, 1]; 1 = consistent."""
    top_positive = probs[:, positive_ids].max(-1)
    top_negative = probs[:, negative_ids].max(-1)
    return 1.0 - 2.0 * np.minimum(top_positive, top_negative)


def emotion_report(
    probs: dict, labels: np.ndarray, tables, *, threshold=0.25, bins=ECE_BINS
) -> dict:
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
