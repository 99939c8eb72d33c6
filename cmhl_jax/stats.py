"""Statistics for comparing training runs: mean and sd over seeds, paired bootstrap CIs.

The bootstrap resamples *texts*: each resample draws N indices with replacement from the
N evaluation texts and recomputes the metric of both arms on the same indices. With several
seeds per arm, seed i of the arm is paired with seed i of the reference arm, the per-seed
differences are averaged, and the distribution of that mean over resamples gives the CI. So
the interval reflects the sampling of texts for the seed-averaged difference; the spread over
seeds is reported separately (sd column), not folded into the interval.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_METRICS = ("accuracy", "macro_f1")


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for fewer than 2 values)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return math.nan, math.nan
    sd = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return float(values.mean()), sd


def _confusions(weights: np.ndarray, labels: np.ndarray, preds: np.ndarray, num_classes: int):
    """Weighted confusion matrices: weights [R, N] (counts of each text per resample)
    → [R, C, C]."""
    cell = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
    onehot = np.zeros((len(cell), num_classes * num_classes), np.float64)
    onehot[np.arange(len(cell)), cell] = 1.0
    return (weights @ onehot).reshape(-1, num_classes, num_classes)


def scores_from_confusions(confusions: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro-F1 of each [C, C] confusion (true, predicted) in a stack [..., C, C].

    F1 of a class is 2*TP / (support + predicted), 0 where it is undefined, and the macro mean
    runs over every class, as `cmhl_jax.metrics.classification_scores`.
    """
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    support = confusions.sum(-1)
    predicted = confusions.sum(-2)
    total = confusions.sum((-2, -1))
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=np.float64), where=denom > 0)
    return {
        "accuracy": np.divide(tp.sum(-1), total, out=np.zeros_like(total), where=total > 0),
        "macro_f1": f1.mean(-1),
    }


def resample_weights(num_texts: int, num_resamples: int, seed) -> np.ndarray:
    """[R, N] counts: how often each text is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_texts, np.full(num_texts, 1.0 / num_texts), size=num_resamples)


def paired_bootstrap(
    labels,
    preds_a,
    preds_b,
    num_classes: int,
    *,
    num_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    metrics=BOOTSTRAP_METRICS,
    chunk: int = 250,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of metric(A) - metric(B) on the same texts.

    labels [N]; preds_a, preds_b: [S, N] (or [N]) predicted class ids; row s of A is paired
    with row s of B (seed s of each arm). Returns, per metric, the observed difference of the
    seed means (`diff`), the percentile interval (`low`, `high`) of that difference over
    `num_resamples` text resamples, and `p_le_0`, the share of resamples with a difference <= 0.
    """
    labels = np.asarray(labels)
    preds_a, preds_b = np.atleast_2d(preds_a), np.atleast_2d(preds_b)
    if preds_a.shape != preds_b.shape or preds_a.shape[1] != labels.shape[0]:
        raise ValueError(
            f"paired arms need predictions of the same shape [seeds, texts]: "
            f"{preds_a.shape} vs {preds_b.shape} for {labels.shape[0]} texts"
        )
    n = labels.shape[0]
    observed_weights = np.ones((1, n))
    diffs = {m: [] for m in metrics}
    observed = {m: 0.0 for m in metrics}
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        weights = resample_weights(n, size, [seed, start])
        per_seed = {m: np.zeros(size) for m in metrics}
        for a, b in zip(preds_a, preds_b, strict=True):
            score_a = scores_from_confusions(_confusions(weights, labels, a, num_classes))
            score_b = scores_from_confusions(_confusions(weights, labels, b, num_classes))
            for m in metrics:
                per_seed[m] += (score_a[m] - score_b[m]) / len(preds_a)
        for m in metrics:
            diffs[m].append(per_seed[m])
    for a, b in zip(preds_a, preds_b, strict=True):
        score_a = scores_from_confusions(_confusions(observed_weights, labels, a, num_classes))
        score_b = scores_from_confusions(_confusions(observed_weights, labels, b, num_classes))
        for m in metrics:
            observed[m] += float(score_a[m][0] - score_b[m][0]) / len(preds_a)
    tail = (1.0 - level) / 2 * 100
    result = {}
    for m in metrics:
        values = np.concatenate(diffs[m])
        low, high = np.percentile(values, [tail, 100 - tail])
        result[m] = {
            "diff": observed[m],
            "low": float(low),
            "high": float(high),
            "p_le_0": float((values <= 0).mean()),
        }
    return result


def format_mean_sd(mean: float, sd: float, scale: float = 100.0, digits: int = 2) -> str:
    """`93.10 ± 0.42` (values scaled, e.g. to percent); sd shown as `–` when undefined."""
    if math.isnan(mean):
        return "–"
    sd_text = "–" if math.isnan(sd) else f"{sd * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {sd_text}"


def format_ci(diff: float, low: float, high: float, scale: float = 100.0, digits: int = 2) -> str:
    """`+0.85 [+0.12, +1.60]`."""
    return f"{diff * scale:+.{digits}f} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"
