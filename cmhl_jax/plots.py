"""PNG plots (matplotlib, Agg backend): training curves, confusion matrix, reliability
diagram, emotion co-activation, gate-weight distributions, ablation summaries.

Every function takes plain arrays, writes one PNG and returns its path. Install matplotlib
with `pip install 'cmhl-jax[plots]'`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from etils import epath

from cmhl_jax.metrics import confusion_matrix, expected_calibration_error


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'cmhl-jax[plots]'") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(train records, validation records) of a metrics.jsonl."""
    train, val = [], []
    for line in epath.Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            (val if any(k.startswith("val_") for k in record) else train).append(record)
    return train, val


TRAIN_KEYS = ("loss", "ce_emotion", "ce_valence", "ce_intensity", "exclusivity")
VAL_KEYS = ("val_accuracy", "val_macro_f1", "val_weighted_f1", "val_contradiction_rate", "val_ece")


def plot_training_curves(metrics_path: str | Path, out: str | Path) -> Path:
    """Loss terms and learning rate against step; validation metrics against step."""
    plt = _pyplot()
    train, val = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    for key in TRAIN_KEYS:
        if train and key in train[0]:
            axes[0].plot(steps, [r[key] for r in train], label=key)
    axes[0].set(title="training loss terms", xlabel="step")
    if train and "lr" in train[0]:
        axes[1].plot(steps, [r["lr"] for r in train], color="C1")
    axes[1].set(title="learning rate", xlabel="step")
    drawn = []
    for key in VAL_KEYS:
        if val and key in val[0]:
            values = [r[key] for r in val]
            axes[2].plot([r["step"] for r in val], values, marker="o", label=key[4:])
            drawn.extend(v for v in values if v is not None and math.isfinite(v))
    axes[2].set(title="validation", xlabel="step")
    if drawn:  # fit the axis to the values (not 0 to 1), so that their changes are visible
        low, high = min(drawn), max(drawn)
        margin = max(0.1 * (high - low), 0.005)
        axes[2].set_ylim(low - margin, high + margin)
    for ax in (axes[0], axes[2]):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, out)


def plot_confusion_matrix(
    matrix, class_names: Sequence[str], out: str | Path, *, normalize: bool = True
) -> Path:
    """[true, predicted] counts; colours are row-normalised (recall), cells show counts."""
    plt = _pyplot()
    matrix = np.asarray(matrix, np.float64)
    rows = matrix.sum(1, keepdims=True)
    shown = (
        np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0) if normalize else matrix
    )
    fig, ax = plt.subplots(figsize=(1.0 * len(class_names) + 2, 1.0 * len(class_names) + 1.5))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class" if normalize else None)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    for i in ticks:
        for j in ticks:
            color = "white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black"
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=color)
    return _save(fig, out)


def reliability_bins(probs, labels, bins: int) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (`bins` of them: the config's eval.ece_bins): count, mean
    confidence, accuracy (nan if empty)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    safe = np.maximum(count, 1)
    with np.errstate(invalid="ignore"):
        conf = np.where(count > 0, np.bincount(index, confidence, bins) / safe, np.nan)
        acc = np.where(count > 0, np.bincount(index, correct.astype(float), bins) / safe, np.nan)
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc}


def plot_reliability(probs, labels, out: str | Path, *, bins: int) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the ECE."""
    plt = _pyplot()
    stats = reliability_bins(probs, labels, bins)
    ece = expected_calibration_error(np.asarray(probs), np.asarray(labels), bins)
    centers = (stats["edges"][:-1] + stats["edges"][1:]) / 2
    width = 1.0 / bins
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.bar(centers, np.nan_to_num(stats["accuracy"]), width=width, edgecolor="k", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylabel="accuracy", title=f"reliability (ECE {ece:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    ax_count.bar(centers, stats["count"], width=width, color="C7", edgecolor="k")
    ax_count.set(xlabel="confidence (max probability)", ylabel="texts")
    return _save(fig, out)


def coactivation_matrix(probs) -> np.ndarray:
    """[C, C] mean over texts of p_i * p_j (diagonal: mean p_i^2)."""
    probs = np.asarray(probs, np.float64)
    return probs.T @ probs / max(len(probs), 1)


def hinge_active_share(probs, tau, pair_mask, variant: str = "sum") -> np.ndarray:
    """[C, C] share of texts whose exclusivity hinge is active for the pair (score > tau_ij,
    on the variant's scale, see `cmhl_jax.losses.pair_scores`); 0 outside the P x N pairs."""
    probs = np.asarray(probs, np.float64)
    p_i, p_j = probs[:, :, None], probs[:, None, :]
    tau = np.asarray(tau, np.float64)
    if variant == "sum":
        score, threshold = p_i + p_j, tau
    elif variant == "product":
        score, threshold = p_i * p_j, (tau / 2) ** 2
    elif variant == "min":
        score, threshold = np.minimum(p_i, p_j), tau / 2
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return (score > threshold).mean(0) * np.asarray(pair_mask, np.float64)


def plot_coactivation(
    matrix, class_names: Sequence[str], out: str | Path, *, title: str = "mean p_i * p_j"
) -> Path:
    """Heat map of a [C, C] emotion-pair matrix (co-activation or hinge-active share)."""
    plt = _pyplot()
    matrix = np.asarray(matrix, np.float64)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="magma_r")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_title(title)
    top = matrix.max() or 1.0
    for i in ticks:
        for j in ticks:
            color = "white" if matrix[i, j] > 0.6 * top else "black"
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", color=color, fontsize=8)
    return _save(fig, out)


def plot_gate_weights(
    gates,
    labels,
    class_names: Sequence[str],
    out: str | Path,
    *,
    gate_names=("primary", "intensity"),
) -> Path:
    """Distributions of the mental-health model's gate weights a = (a1, a2) (rows sum to 1):
    a histogram of a1 over all texts and a box plot of a1 per class."""
    plt = _pyplot()
    gates, labels = np.asarray(gates, np.float64), np.asarray(labels)
    if gates.ndim != 2 or gates.shape[1] != 2:
        raise ValueError(f"gate weights must be [N, 2], got {gates.shape}")
    fig, (ax_hist, ax_box) = plt.subplots(1, 2, figsize=(12, 4))
    ax_hist.hist(gates[:, 0], bins=30, range=(0, 1), color="C0", edgecolor="k")
    ax_hist.axvline(0.5, color="k", ls="--", lw=1)
    ax_hist.set(
        xlabel=f"a1 ({gate_names[0]} weight; a2 = 1 - a1)",
        ylabel="texts",
        title=f"gate weights, all texts (mean a1 {gates[:, 0].mean():.3f})",
    )
    groups = [gates[labels == c, 0] for c in range(len(class_names))]
    present = [i for i, g in enumerate(groups) if len(g)]
    if present:
        ax_box.boxplot([groups[i] for i in present], showmeans=True)
        ax_box.set_xticks(
            range(1, len(present) + 1), [class_names[i] for i in present], rotation=30, ha="right"
        )
    ax_box.axhline(0.5, color="k", ls="--", lw=1)
    ax_box.set(ylabel=f"a1 ({gate_names[0]})", ylim=(0, 1), title="a1 by class")
    return _save(fig, out)


def plot_ablation(summary: list[dict], out: str | Path, *, title: str = "") -> Path:
    """Per arm: accuracy and macro-F1 (mean ± sd over seeds), and the bootstrap CI of each
    arm's macro-F1 difference to the reference arm.

    `summary` rows: {"arm", "accuracy_mean", "accuracy_sd", "macro_f1_mean", "macro_f1_sd",
    and optionally "macro_f1_diff", "macro_f1_low", "macro_f1_high"}.
    """
    plt = _pyplot()
    arms = [row["arm"] for row in summary]
    x = np.arange(len(arms))
    fig, (ax, ax_ci) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(arms) + 4), 4.5))
    shown = [m for m in ("accuracy", "macro_f1", "micro_f1") if f"{m}_mean" in summary[0]][:2]
    for k, metric in enumerate(shown):  # accuracy and macro-F1 (multi-label: macro, micro)
        means = np.array([row[f"{metric}_mean"] for row in summary]) * 100
        sds = np.nan_to_num(np.array([row[f"{metric}_sd"] for row in summary], float)) * 100
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=sds, capsize=3, label=metric)
    ax.set_xticks(x, arms, rotation=30, ha="right")
    ax.set(ylabel="%", title=title or "mean ± sd over seeds")
    finite = [row["macro_f1_mean"] for row in summary if not math.isnan(row["macro_f1_mean"])]
    if finite:
        ax.set_ylim(max(0, 100 * min(finite) - 10), min(100, 100 * max(finite) + 5))
    ax.legend()
    with_ci = [row for row in summary if "macro_f1_low" in row]
    for i, row in enumerate(with_ci):
        diff, low, high = (100 * row[f"macro_f1_{k}"] for k in ("diff", "low", "high"))
        ax_ci.errorbar(diff, i, xerr=[[diff - low], [high - diff]], fmt="o", capsize=4)
    ax_ci.axvline(0, color="k", lw=1)
    ax_ci.set_yticks(range(len(with_ci)), [row["arm"] for row in with_ci])
    ax_ci.set(xlabel="macro-F1 difference to reference (points, 95% CI)", title="paired bootstrap")
    return _save(fig, out)


def write_eval_plots(
    out_prefix: str | Path,
    probs: dict,
    labels,
    class_names: Sequence[str],
    *,
    primary: str = "emotion",
    tables=None,
    metrics_path=None,
    bins: int,
    variant: str = "sum",
) -> list[Path]:
    """The evaluation plots of one split: `<prefix>.confusion.png` (single-label: `labels`
    [N] of class ids), `.reliability.png` (multi-label, `labels` [N, C] multi-hot: over every
    (text, label) decision at 0.5, as `metrics.multilabel_ece`), `.coactivation.png`; with
    affect `tables` (emotion task) `.hinge.png`; with a `gate` output `.gate.png`; and
    `.curves.png` when a metrics.jsonl is given."""
    prefix = str(out_prefix)
    names = list(class_names)
    scores = np.asarray(probs[primary])
    labels = np.asarray(labels)
    paths = []
    if labels.ndim == 1:
        matrix = confusion_matrix(labels, scores.argmax(-1), len(names))
        paths.append(plot_confusion_matrix(matrix, names, f"{prefix}.confusion.png"))
        reliability = scores, labels
    else:  # each (text, label) a binary decision: probabilities (1 - p, p), gold 0 / 1
        flat = scores.reshape(-1)
        reliability = np.stack([1 - flat, flat], -1), (labels.reshape(-1) > 0).astype(int)
    paths += [
        plot_reliability(*reliability, f"{prefix}.reliability.png", bins=bins),
        plot_coactivation(
            coactivation_matrix(scores),
            names,
            f"{prefix}.coactivation.png",
            title="co-activation: mean p_i * p_j over texts",
        ),
    ]
    if tables is not None:
        paths.append(
            plot_coactivation(
                hinge_active_share(scores, tables.tau, tables.pair_mask, variant),
                names,
                f"{prefix}.hinge.png",
                title=f"share of texts with an active exclusivity hinge ({variant})",
            )
        )
    if "gate" in probs:
        paths.append(plot_gate_weights(probs["gate"], labels, names, f"{prefix}.gate.png"))
    if metrics_path is not None and Path(metrics_path).is_file():
        paths.append(plot_training_curves(metrics_path, f"{prefix}.curves.png"))
    return paths
