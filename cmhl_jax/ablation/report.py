"""The ablation's tables: per-arm mean ± sd and paired bootstrap CIs (`summarize`), the
markdown table, the val-curve table, ablation.md / .csv / _runs.csv / _<split>.png, and the
README block. `metrics` is the task's `Task.table_metrics`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cmhl_jax import stats
from cmhl_jax.ablation.arms import REFERENCE, AblationError, Arm
from cmhl_jax.docs import replace_marked_block
from cmhl_jax.plots import plot_ablation

METRIC_TITLES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "weighted_f1": "weighted-F1",
    "contradiction_rate": "contradiction",
    "ece": "ECE",
    "micro_f1": "micro-F1",
    "false_contradiction_rate": "false contradiction",
    "mixed_recall": "mixed recall",
}


def summarize(
    results: dict[tuple[str, int], dict],
    arms: list[Arm],
    *,
    num_classes: int,
    resamples: int,
    bootstrap_seed: int,
    metrics: tuple[str, ...],
) -> list[dict]:
    """One row per arm: mean/sd of every table metric and the paired bootstrap CIs.

    `results[(arm, seed)]` holds the run's metrics and its per-text arrays (`labels`,
    `preds` and, from `stats.per_text_inputs`, the contradiction and ECE inputs)."""
    rows = []
    reference = {seed: r for (arm, seed), r in results.items() if arm == REFERENCE}
    for arm in arms:
        seeds = sorted(seed for (name, seed) in results if name == arm.name)
        row = {"arm": arm.name, "description": arm.description, "seeds": len(seeds)}
        row["overrides"] = " ".join(arm.overrides)
        for metric in metrics:
            mean, sd = stats.mean_sd([results[(arm.name, s)][metric] for s in seeds])
            row[f"{metric}_mean"], row[f"{metric}_sd"] = mean, sd
        paired = [s for s in seeds if s in reference]
        bootstrap = paired and "preds" in reference[paired[0]]
        if arm.name != REFERENCE and bootstrap:
            labels = reference[paired[0]]["labels"]
            for s in paired:
                if not np.array_equal(results[(arm.name, s)]["labels"], labels):
                    raise AblationError(f"{arm.name} seed {s} was scored on other texts")
            ci = stats.paired_bootstrap(
                labels,
                [results[(arm.name, s)] for s in paired],
                [reference[s] for s in paired],
                num_classes,
                num_resamples=resamples,
                seed=bootstrap_seed,
            )
            row["paired_seeds"] = len(paired)
            for metric, values in ci.items():
                for key in ("diff", "low", "high"):
                    row[f"{metric}_{key}"] = values[key]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], *, split: str, metrics: tuple[str, ...]) -> str:
    """Mean ± sd per arm, then the CI of the difference to the reference for each metric."""
    titles = [METRIC_TITLES.get(m, m) for m in metrics]
    header = ["arm", "seeds", *titles, *(f"Δ {t} [95% CI]" for t in titles)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for row in rows:
        cells = [f"`{row['arm']}`", str(row["seeds"])]
        cells += [stats.format_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in metrics]
        for metric in metrics:
            if f"{metric}_diff" in row:
                cells.append(
                    stats.format_ci(
                        row[f"{metric}_diff"], row[f"{metric}_low"], row[f"{metric}_high"]
                    )
                )
            else:
                cells.append("reference" if row["arm"] == REFERENCE else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(records: list[dict]) -> str:
    """Val macro-F1 after each epoch, mean over each arm's seeds (from the runs' val curves):
    whether the schedule was long enough."""
    by_arm: dict[str, dict[int, list[float]]] = {}
    for record in records:
        for point in record.get("val_curve", []):
            epochs = by_arm.setdefault(record["arm"], {})
            epochs.setdefault(point["epoch"], []).append(point["val_macro_f1"])
    if not by_arm:
        return ""
    epochs = sorted({e for arm in by_arm.values() for e in arm})
    lines = [
        "| arm | " + " | ".join(f"epoch {e + 1}" for e in epochs) + " |",
        "|---|" + "---:|" * len(epochs),
    ]
    for arm, values in by_arm.items():
        cells = [
            f"{100 * np.mean(values[e]):.2f} (n={len(values[e])})" if e in values else "–"
            for e in epochs
        ]
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_run_row(record: dict, splits, metrics: tuple[str, ...]) -> dict:
    """One row of ablation_runs.csv: arm, seed, steps, and each split's metrics (the val
    metrics also without prefix: accuracy, macro_f1, contradiction_rate, ...)."""
    row = {"arm": record["arm"], "seed": record["seed"], "steps": record["steps"]}
    row["best_step"] = record["best_step"]
    row.update({m: record["scores"]["val"][m] for m in metrics})
    for split in splits:
        scores = record["scores"][split]
        row[f"{split}_num_examples"] = scores["num_examples"]
        row.update({f"{split}_{m}": scores[m] for m in metrics})
    return row


def write_outputs(
    out: Path,
    rows_by_split: dict,
    per_run: list[dict],
    *,
    command: str,
    resamples: int,
    metrics: tuple[str, ...],
    note: str = "",
    curves: str = "",
) -> None:
    """OUT/ablation.md (with an ablation_<split>.png per split), ablation.csv (per arm) and
    ablation_runs.csv (per run)."""
    steps = [r["steps"] for r in per_run]
    parts = [
        "Generated by `python -m cmhl_jax.ablation`; do not edit by hand.",
        "",
        f"Command: `{command}`",
        "",
        f"Best-checkpoint scores in % (mean ± sd over seeds; sd is ddof=1). Runs trained for "
        f"{min(steps)}–{max(steps)} steps. Δ: difference of the seed means to `{REFERENCE}`, "
        f"with a paired bootstrap 95% CI ({resamples} resamples of the texts; seed i of an "
        f"arm paired with seed i of `{REFERENCE}`, the same resampled texts for both; the CI "
        f"covers text sampling, not seed variance). {note}".rstrip(),
    ]
    for split, rows in rows_by_split.items():
        n = per_run[0].get(f"{split}_num_examples") if per_run else None
        table = markdown_table(rows, split=split, metrics=metrics)
        parts += ["", f"**{split}** ({n} texts)", "", table]
        plot_ablation(rows, out / f"ablation_{split}.png", title=f"{split}: mean ± sd over seeds")
    if curves:
        parts += ["", "**val macro-F1 (%) after each epoch**, mean over seeds:", "", curves]
    (out / "ablation.md").write_text("\n".join(parts) + "\n")
    _write_csvs(out, rows_by_split, per_run, metrics)


def _write_csvs(out: Path, rows_by_split: dict, per_run: list[dict], metrics) -> None:
    fields = ["split", "arm", "description", "overrides", "seeds", "paired_seeds"]
    for metric in metrics:
        fields += [f"{metric}_mean", f"{metric}_sd"]
    for metric in stats.BOOTSTRAP_METRICS:
        fields += [f"{metric}_diff", f"{metric}_low", f"{metric}_high"]
    with (out / "ablation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for split, rows in rows_by_split.items():
            for row in rows:
                writer.writerow({"split": split, **row})
    with (out / "ablation_runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(per_run[0]))
        writer.writeheader()
        writer.writerows(per_run)


def update_readme(readme: str | Path, table_md: str | Path, block: str = "ablation") -> None:
    """Replaces the text between the `block` markers of `readme` with `table_md`'s text."""
    try:
        replace_marked_block(readme, block, Path(table_md).read_text())
    except ValueError as err:
        raise AblationError(str(err)) from None
