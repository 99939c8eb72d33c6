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

from cmhl_jax.metrics import (
    ECE_BINS,
    average_precision,
    ece_bin_index,
    mixed_valence,
    precision_recall_f1,
)

BOOTSTRAP_METRICS = (
    "accuracy",
    "macro_f1",
    "tuned_macro_f1",
    "macro_ap",
    "micro_ap",
    "weighted_f1",
    "micro_f1",
    "contradiction_rate",
    "false_contradiction_rate",
    "mixed_recall",
    "ece",
)


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
    """Accuracy, macro-F1 and weighted-F1 of each [C, C] confusion (true, predicted) in a
    stack [..., C, C].

    F1 of a class is `metrics.precision_recall_f1`'s, and the macro mean runs over every class
    (the weighted mean by support), as `cmhl_jax.metrics.classification_scores`.
    """
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    support = confusions.sum(-1)
    total = confusions.sum((-2, -1))
    f1 = precision_recall_f1(tp, support, confusions.sum(-2))[2]
    return {
        "accuracy": np.divide(tp.sum(-1), total, out=np.zeros_like(total), where=total > 0),
        "macro_f1": f1.mean(-1),
        "weighted_f1": np.divide(
            (f1 * support).sum(-1), total, out=np.zeros_like(total), where=total > 0
        ),
    }


def classification_inputs(labels, probs, bins=ECE_BINS) -> dict:
    """What the bootstrap needs of one single-label run, from its probabilities [N, C]:
    predictions and each text's ECE bin and confidence-minus-correct gap
    (`metrics.expected_calibration_error`)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    confidence, preds = probs.max(-1), probs.argmax(-1)
    return {
        "preds": preds,
        "ece_bin": ece_bin_index(confidence, bins),
        "ece_gap": confidence - (preds == labels),
    }


def per_text_inputs(labels, probs, positive_ids, negative_ids, threshold: float, bins=ECE_BINS):
    """`classification_inputs` and the contradiction indicator
    (the emotion task's contradiction rate) of an emotion run."""
    probs = np.asarray(probs, np.float64)
    return {
        **classification_inputs(labels, probs, bins),
        "contradicted": (probs[:, positive_ids].max(-1) >= threshold)
        & (probs[:, negative_ids].max(-1) >= threshold),
    }


def multilabel_inputs(
    gold, probs, thresholds, positive_ids, negative_ids, bins=ECE_BINS, tuned=None
):
    """What the bootstrap needs of one multi-label run (GoEmotions), from its sigmoid
    probabilities [N, K] and gold multi-hot rows [N, K]: the label decisions (`preds`), those
    at the per-label `tuned` thresholds (`tuned_preds`, when given), the probabilities (for
    average precision) and `gold_on`, the texts with a predicted and a gold valence mix
    (`metrics.multilabel_contradiction`), and each text's calibration gaps of its K binary
    decisions summed per confidence bin [N, bins] (`metrics.multilabel_ece`)."""
    gold, probs = np.asarray(gold) > 0, np.asarray(probs, np.float64)
    preds = probs >= np.asarray(thresholds)
    confidence = np.maximum(probs, 1.0 - probs)  # the binary decision at 0.5: argmax(1-p, p)
    gap = confidence - ((probs > 0.5) == gold)
    ece_gap = np.zeros((len(gold), bins))
    np.add.at(ece_gap, (np.arange(len(gold))[:, None], ece_bin_index(confidence, bins)), gap)
    tuned_preds = {} if tuned is None else {"tuned_preds": probs >= np.asarray(tuned)}
    return {
        "preds": preds,
        **tuned_preds,
        "probs": probs,
        "gold_on": gold,
        "predicted_mixed": mixed_valence(preds, positive_ids, negative_ids),
        "gold_mixed": mixed_valence(gold, positive_ids, negative_ids),
        "ece_gap_by_bin": ece_gap,
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _label_f1(weights: np.ndarray, gold: np.ndarray, preds: np.ndarray):
    """Per-label F1 [R, K] (`metrics.precision_recall_f1`) and the micro F1 [R]."""
    preds = preds.astype(np.float64)
    true_pos, support, predicted = weights @ (gold * preds), weights @ gold, weights @ preds
    micro = precision_recall_f1(true_pos.sum(-1), support.sum(-1), predicted.sum(-1))[2]
    return precision_recall_f1(true_pos, support, predicted)[2], micro


def multilabel_scores_from_weights(weights: np.ndarray, run: dict) -> dict:
    """The multi-label bootstrap metrics of one run (`multilabel_inputs`) under text weights
    [R, N]; with weights of 1 they equal `metrics.multilabel_scores`, `multilabel_contradiction`,
    `multilabel_ece` and `metrics.average_precision`."""
    gold = run["gold_on"].astype(np.float64)
    f1, micro_f1 = _label_f1(weights, gold, run["preds"])
    mixed, contradicted = run["gold_mixed"], run["predicted_mixed"]
    total = weights.sum(-1)
    extra = {}
    if "tuned_preds" in run:
        extra["tuned_macro_f1"] = _label_f1(weights, gold, run["tuned_preds"])[0].mean(-1)
    if "probs" in run:
        probs, num_labels = run["probs"], gold.shape[1]
        extra["macro_ap"] = np.nanmean(average_precision(probs, gold, weights), axis=-1)
        flat_weights = np.repeat(weights, num_labels, axis=1)  # text-major, as reshape(-1)
        flat = average_precision(probs.reshape(-1, 1), gold.reshape(-1, 1), flat_weights)
        extra["micro_ap"] = flat[:, 0]
    return {
        **extra,
        "macro_f1": f1.mean(-1),
        "micro_f1": micro_f1,
        "contradiction_rate": weights @ contradicted.astype(np.float64) / total,
        "false_contradiction_rate": weights @ (contradicted & ~mixed).astype(np.float64) / total,
        "mixed_recall": _ratio(
            weights @ (contradicted & mixed).astype(np.float64), weights @ mixed.astype(float)
        ),
        "ece": np.abs(weights @ run["ece_gap_by_bin"]).sum(-1) / (total * gold.shape[1]),
    }


def scores_from_weights(weights: np.ndarray, labels, run: dict, num_classes: int) -> dict:
    """Every bootstrap metric of one run under text weights [R, N] (counts per resample);
    a multi-label run (`multilabel_inputs`) gets the multi-label metrics."""
    if "gold_on" in run:
        return multilabel_scores_from_weights(weights, run)
    scores = scores_from_confusions(_confusions(weights, labels, run["preds"], num_classes))
    total = weights.sum(-1)
    if "contradicted" in run:
        scores["contradiction_rate"] = weights @ run["contradicted"].astype(np.float64) / total
    if "ece_bin" in run:
        onehot = np.zeros((len(labels), int(run["ece_bin"].max()) + 1))
        onehot[np.arange(len(labels)), run["ece_bin"]] = run["ece_gap"]
        scores["ece"] = np.abs(weights @ onehot).sum(-1) / total
    return scores


def resample_weights(num_texts: int, num_resamples: int, seed) -> np.ndarray:
    """[R, N] counts: how often each text is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_texts, np.full(num_texts, 1.0 / num_texts), size=num_resamples)


def _as_runs(arm) -> list[dict]:
    """One dict of per-text arrays per seed (`per_text_inputs`), from such dicts or from
    predicted class ids [S, N] / [N]."""
    if isinstance(arm, list | tuple) and arm and isinstance(arm[0], dict):
        return list(arm)
    return [{"preds": preds} for preds in np.atleast_2d(arm)]


def paired_bootstrap(
    labels,
    arm_a,
    arm_b,
    num_classes: int,
    *,
    num_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    metrics=None,
    chunk: int = 250,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of metric(A) - metric(B) on the same texts.

    labels [N]; each arm is predicted class ids [S, N] (or [N]), or a list of S dicts from
    `per_text_inputs` (then contradiction rate and ECE are compared too). Seed s of A is paired
    with seed s of B. Returns, per metric, the observed difference of the seed means (`diff`),
    the percentile interval (`low`, `high`) of that difference over `num_resamples` text
    resamples, and `p_le_0`, the share of resamples with a difference <= 0.
    """
    labels = np.asarray(labels)
    runs_a, runs_b = _as_runs(arm_a), _as_runs(arm_b)
    shapes = [np.shape(r["preds"]) for r in (*runs_a, *runs_b)]
    if len(runs_a) != len(runs_b) or any(shape[:1] != labels.shape[:1] for shape in shapes):
        raise ValueError(
            f"paired arms need predictions of the same shape [seeds, texts]: "
            f"{len(runs_a)} vs {len(runs_b)} seeds of {shapes} for {labels.shape[0]} texts"
        )
    n = labels.shape[0]

    def mean_difference(weights: np.ndarray) -> dict[str, np.ndarray]:
        total: dict[str, np.ndarray] = {}
        for a, b in zip(runs_a, runs_b, strict=True):
            score_a = scores_from_weights(weights, labels, a, num_classes)
            score_b = scores_from_weights(weights, labels, b, num_classes)
            for m in score_a.keys() & score_b.keys():
                total[m] = total.get(m, 0.0) + (score_a[m] - score_b[m]) / len(runs_a)
        return total

    observed = mean_difference(np.ones((1, n)))
    metrics = [m for m in (metrics or BOOTSTRAP_METRICS) if m in observed]
    diffs = {m: [] for m in metrics}
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        resampled = mean_difference(resample_weights(n, size, [seed, start]))
        for m in metrics:
            diffs[m].append(resampled[m])
    tail = (1.0 - level) / 2 * 100
    result = {}
    for m in metrics:
        values = np.concatenate(diffs[m])
        low, high = np.percentile(values, [tail, 100 - tail])
        result[m] = {
            "diff": float(observed[m][0]),
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
