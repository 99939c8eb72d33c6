"""Ablation and sweeps: train every arm x seed, score the best checkpoints, one table.

    python -m cmhl_jax.ablation --config configs/emotion_minilm.py --out runs/ablation \
        [--seeds 5] [--arms ce_only,aux_heads,cmhl_sum,cmhl_product,cmhl_min] [--test FILE] \
        [--sweep "loss.alpha=0.25,0.5,1.0" --sweep "affect.tau0=0.4,0.5"] \
        [--parallel-runs N --devices 0,1,...] [--config.a.b=value ...]
    python -m cmhl_jax.ablation --readme README.md --from runs/ablation

Arms (overrides on top of the config):

* `ce_only`: CE on the emotion head only (alpha = beta = lam = 0), the reference arm;
* `aux_heads`: + valence and intensity heads (lam = 0);
* `cmhl_sum`: + exclusivity term, the paper's sum form (loss.variant=sum);
* `cmhl_product`, `cmhl_min`: the exclusivity term with p_i*p_j or min(p_i, p_j).

`--sweep KEY=V1,V2,...` (repeatable) runs the grid of all value combinations on top of each
arm (default arm with a sweep: cmhl_sum); the reference arm is always run too.

Each run is `train_and_evaluate` into `OUT/runs/<arm>_s<seed>` with `seed=<seed>`. A run whose
summary.json exists and was not stopped by a signal is skipped, so the command resumes after
an interruption (and an interrupted run resumes from its latest checkpoint). Runs go one
after another in this process, or, with `--parallel-runs N`, in N worker processes, each
pinned to one accelerator via CUDA_VISIBLE_DEVICES (from `--devices`, default 0..N-1).

Then every run's best checkpoint is scored on val (and `--test`) with `evaluate_split`
(cached in the run dir), and OUT/ablation.md, OUT/ablation.csv (per arm), OUT/ablation_runs.csv
(per run) and OUT/ablation_<split>.png are written. The table gives per arm the mean ± sd over
seeds of accuracy, macro-F1, weighted-F1, contradiction rate and ECE, and a paired bootstrap
95% CI of the arm's difference to the reference arm in macro-F1 and accuracy (see
`cmhl_jax.stats`: seed i paired with seed i, texts resampled, same resample for every pair).
"""

from __future__ import annotations

if __name__ == "__main__":
    from cmhl_jax.runtime import ensure_fast_runtime

    ensure_fast_runtime()

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from cmhl_jax import stats  # noqa: E402
from cmhl_jax.cli import config_overrides  # noqa: E402
from cmhl_jax.config import ConfigError, apply_overrides, load_config, to_json  # noqa: E402
from cmhl_jax.docs import replace_marked_block  # noqa: E402

log = logging.getLogger("cmhl_jax.ablation")

ARMS: dict[str, tuple[str, list[str]]] = {
    "ce_only": ("CE on emotion only", ["loss.alpha=0", "loss.beta=0", "loss.lam=0"]),
    "aux_heads": ("+ valence/intensity heads", ["loss.lam=0"]),
    "cmhl_sum": ("+ exclusivity, sum (paper)", ["loss.variant=sum"]),
    "cmhl_product": ("+ exclusivity, product", ["loss.variant=product"]),
    "cmhl_min": ("+ exclusivity, min", ["loss.variant=min"]),
}
REFERENCE = "ce_only"
TABLE_METRICS = ("accuracy", "macro_f1", "weighted_f1", "contradiction_rate", "ece")
METRIC_TITLES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "weighted_f1": "weighted-F1",
    "contradiction_rate": "contradiction",
    "ece": "ECE",
}


class AblationError(RuntimeError):
    """A run was stopped or failed, or the output dir holds runs of another config."""


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str  # e.g. "cmhl_sum" or "cmhl_sum[alpha=0.25,tau0=0.4]"
    description: str
    overrides: tuple[str, ...]

    @property
    def dirname(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.name.replace("[", "__").rstrip("]"))


@dataclasses.dataclass(frozen=True)
class Run:
    arm: Arm
    seed: int
    workdir: Path

    @property
    def name(self) -> str:
        return f"{self.arm.name} seed {self.seed}"


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise ConfigError(f"--sweep {text!r} must look like KEY=V1,V2,... e.g. loss.alpha=0.25,0.5")
    return key.strip().removeprefix("config."), items


def build_arms(arm_names: list[str], sweeps: list[tuple[str, list[str]]]) -> list[Arm]:
    """The arms to run: each named arm, times the sweep grid; the reference arm first."""
    unknown = [a for a in arm_names if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    arms = []
    grid = list(itertools.product(*[[(k, v) for v in values] for k, values in sweeps]))
    for name in arm_names:
        description, overrides = ARMS[name]
        if not sweeps or name == REFERENCE:
            arms.append(Arm(name, description, tuple(overrides)))
            continue
        for point in grid:
            label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in point)
            extra = tuple(f"{k}={v}" for k, v in point)
            arms.append(Arm(f"{name}[{label}]", f"{description}, {label}", (*overrides, *extra)))
    if REFERENCE not in arm_names:
        description, overrides = ARMS[REFERENCE]
        arms.insert(0, Arm(REFERENCE, description, tuple(overrides)))
    return sorted(arms, key=lambda a: a.name != REFERENCE)


def run_config(base_path: str, overrides: list[str], arm: Arm, seed: int, out: Path):
    config = apply_overrides(load_config(base_path), [*overrides, *arm.overrides])
    config.seed = seed
    if not config.data.cache_dir:
        config.data.cache_dir = str(out / "cache")  # tokenise once for all runs
    return config


def is_finished(workdir: Path) -> bool:
    summary = workdir / "summary.json"
    if not summary.is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("stopped_by") is None
    except json.JSONDecodeError:
        return False


def _check_same_config(workdir: Path, config) -> None:
    stored = workdir / "run_config.json"
    text = to_json(config)
    if stored.is_file() and stored.read_text() != text:
        raise AblationError(
            f"{workdir} was trained with another config (see {stored}); "
            "use a new --out, or the same config and overrides"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    stored.write_text(text)


def train_in_process(config, workdir: Path) -> None:
    from cmhl_jax.loop import train_and_evaluate

    summary = train_and_evaluate(config, workdir)
    if summary.get("stopped_by"):
        raise AblationError(
            f"{workdir}: stopped by {summary['stopped_by']}; rerun the command to resume"
        )


def train_worker(workdir: Path, device: str | None) -> None:
    """Trains one run in a subprocess pinned to `device` (CUDA_VISIBLE_DEVICES)."""
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    command = [sys.executable, "-m", "cmhl_jax.ablation", "--train-run", str(workdir)]
    with (workdir / "train.log").open("a") as log_file:
        result = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    if result.returncode != 0 or not is_finished(workdir):
        raise AblationError(
            f"{workdir}: worker exited with {result.returncode}; see {workdir / 'train.log'}"
        )


def train_runs(
    runs: list[Run], configs: dict[Path, object], *, parallel_runs: int = 1, devices=None
) -> None:
    pending = []
    for run in runs:
        _check_same_config(run.workdir, configs[run.workdir])
        if is_finished(run.workdir):
            log.info("skip %s: finished (%s)", run.name, run.workdir / "summary.json")
        else:
            pending.append(run)
    if not pending:
        return
    if parallel_runs <= 1:
        for i, run in enumerate(pending):
            log.info("train %s (%d/%d) in %s", run.name, i + 1, len(pending), run.workdir)
            train_in_process(configs[run.workdir], run.workdir)
        return
    slots: queue.Queue = queue.Queue()
    for k in range(parallel_runs):
        slots.put(devices[k % len(devices)] if devices else str(k))

    def work(run: Run) -> None:
        device = slots.get()
        try:
            log.info("train %s on device %s in %s", run.name, device, run.workdir)
            train_worker(run.workdir, device)
        finally:
            slots.put(device)

    with concurrent.futures.ThreadPoolExecutor(parallel_runs) as pool:
        failures = [f.exception() for f in [pool.submit(work, r) for r in pending]]
    failures = [f for f in failures if f is not None]
    if failures:
        raise AblationError("; ".join(str(f) for f in failures))


# ------------------------------------------------------------------------------------------
# Scoring


def evaluate_run(workdir: Path, split: str, spec: str) -> dict:
    """Scores the best checkpoint on one split; cached in <workdir>/ablation_eval/<split>.*"""
    cache_dir = workdir / "ablation_eval"
    report_path, arrays_path = cache_dir / f"{split}.json", cache_dir / f"{split}.npz"
    summary_mtime = (workdir / "summary.json").stat().st_mtime
    if report_path.is_file() and arrays_path.is_file():
        cached = json.loads(report_path.read_text())
        if cached.get("spec") == spec and report_path.stat().st_mtime >= summary_mtime:
            with np.load(arrays_path) as arrays:
                return {**cached, "labels": arrays["labels"], "preds": arrays["preds"]}
    from cmhl_jax.evaluate import evaluate_split, load_trained

    trained = load_trained(workdir, "best")
    report, examples, probs = evaluate_split(trained, spec)
    result = {
        "spec": spec,
        "step": trained.step,
        **{k: report[k] for k in (*TABLE_METRICS, "num_examples")},
    }
    cache_dir.mkdir(exist_ok=True)
    preds = probs["emotion"].argmax(-1).astype(np.int16)
    np.savez(arrays_path, labels=examples.labels, preds=preds, emotion=probs["emotion"])
    report_path.write_text(json.dumps(result, indent=2))
    return {**result, "labels": examples.labels, "preds": preds}


def summarize(
    results: dict[tuple[str, int], dict],
    arms: list[Arm],
    *,
    num_classes: int,
    resamples: int,
    bootstrap_seed: int,
) -> list[dict]:
    """One row per arm: mean/sd of every table metric and the paired bootstrap CIs."""
    rows = []
    reference = {seed: results[(REFERENCE, seed)] for (arm, seed) in results if arm == REFERENCE}
    for arm in arms:
        seeds = sorted(seed for (name, seed) in results if name == arm.name)
        row = {"arm": arm.name, "description": arm.description, "seeds": len(seeds)}
        row["overrides"] = " ".join(arm.overrides)
        for metric in TABLE_METRICS:
            mean, sd = stats.mean_sd([results[(arm.name, s)][metric] for s in seeds])
            row[f"{metric}_mean"], row[f"{metric}_sd"] = mean, sd
        paired = [s for s in seeds if s in reference]
        if arm.name != REFERENCE and paired:
            labels = reference[paired[0]]["labels"]
            for s in paired:
                if not np.array_equal(results[(arm.name, s)]["labels"], labels):
                    raise AblationError(f"{arm.name} seed {s} was scored on other texts")
            ci = stats.paired_bootstrap(
                labels,
                np.stack([results[(arm.name, s)]["preds"] for s in paired]),
                np.stack([reference[s]["preds"] for s in paired]),
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


def markdown_table(rows: list[dict], *, split: str) -> str:
    header = [
        "arm",
        "seeds",
        *(METRIC_TITLES[m] for m in TABLE_METRICS),
        f"Δ macro-F1 vs {REFERENCE} [95% CI]",
        f"Δ accuracy vs {REFERENCE} [95% CI]",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for row in rows:
        cells = [f"`{row['arm']}`", str(row["seeds"])]
        cells += [stats.format_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in TABLE_METRICS]
        for metric in ("macro_f1", "accuracy"):
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


def write_outputs(
    out: Path,
    rows_by_split: dict[str, list[dict]],
    per_run: list[dict],
    *,
    command: str,
    resamples: int,
    steps: list[int],
) -> None:
    from cmhl_jax.plots import plot_ablation

    parts = [
        "Generated by `python -m cmhl_jax.ablation`; do not edit by hand.",
        "",
        f"Command: `{command}`",
        "",
        f"Best-checkpoint scores in % (mean ± sd over seeds; sd is ddof=1). Runs trained for "
        f"{min(steps)}–{max(steps)} steps. Δ: difference of the seed means to `{REFERENCE}`, "
        f"with a paired bootstrap 95% CI ({resamples} resamples of the texts; seed i of an "
        f"arm paired with seed i of `{REFERENCE}`, the same resampled texts for both; the CI "
        "covers text sampling, not seed variance). Contradiction: share of texts with both a "
        "positive and a negative emotion >= eval.contradiction_threshold.",
    ]
    for split, rows in rows_by_split.items():
        n = per_run[0].get(f"{split}_num_examples") if per_run else None
        parts += ["", f"**{split}** ({n} texts)", "", markdown_table(rows, split=split)]
        plot_ablation(rows, out / f"ablation_{split}.png", title=f"{split}: mean ± sd over seeds")
    (out / "ablation.md").write_text("\n".join(parts) + "\n")

    fields = ["split", "arm", "description", "overrides", "seeds", "paired_seeds"]
    for metric in TABLE_METRICS:
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


def update_readme(readme: str | Path, table_md: str | Path) -> None:
    """Replaces the text between the ablation markers of `readme` with `table_md`'s text."""
    try:
        replace_marked_block(readme, "ablation", Path(table_md).read_text())
    except ValueError as err:
        raise AblationError(str(err)) from None


# ------------------------------------------------------------------------------------------
# Command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="CMHL ablation: arms x seeds, best-checkpoint scores, one table.",
        epilog="Config overrides for every run: --config.max_steps=200 --config.data.local_dir=D",
    )
    parser.add_argument("--config", help="config file, e.g. configs/emotion_minilm.py")
    parser.add_argument("--out", help="output dir (runs/, ablation.md, .csv, .png)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per arm")
    parser.add_argument("--arms", default=None, help=f"comma-separated, from {','.join(ARMS)}")
    parser.add_argument("--sweep", action="append", default=[], help="KEY=V1,V2,... (grid)")
    parser.add_argument("--test", default=None, help="also score this split (file or hf:...)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--parallel-runs", type=int, default=1, help="worker processes")
    parser.add_argument("--devices", default=None, help="CUDA device ids for the workers")
    parser.add_argument("--readme", default=None, help="README to update (with --from)")
    parser.add_argument("--from", dest="from_dir", default=None, help="ablation output dir")
    parser.add_argument("--train-run", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    if args.readme or args.from_dir:
        if not (args.readme and args.from_dir):
            parser.error("--readme and --from go together")
    elif not args.train_run and not (args.config and args.out):
        parser.error("--config and --out are required")
    if args.seeds < 1 or args.parallel_runs < 1:
        parser.error("--seeds and --parallel-runs must be >= 1")
    return parser, args, overrides


def main(argv=None) -> int:
    from cmhl_jax.cli import setup_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args, overrides = parse_args(argv)
    setup_logging()
    if args.readme:
        update_readme(args.readme, Path(args.from_dir) / "ablation.md")
        print(f"updated {args.readme} from {Path(args.from_dir) / 'ablation.md'}")
        return 0
    if args.train_run:  # worker of --parallel-runs
        workdir = Path(args.train_run)
        config = ml_collections.ConfigDict(json.loads((workdir / "run_config.json").read_text()))
        train_in_process(config, workdir)
        return 0

    out = Path(args.out)
    try:
        arm_names = args.arms.split(",") if args.arms else None
        sweeps = [parse_sweep(s) for s in args.sweep]
        if arm_names is None:
            arm_names = ["cmhl_sum"] if sweeps else list(ARMS)
        arms = build_arms([a.strip() for a in arm_names if a.strip()], sweeps)
        configs, runs = {}, []
        for arm in arms:
            for seed in range(args.seeds):
                workdir = out / "runs" / f"{arm.dirname}_s{seed}"
                configs[workdir] = run_config(args.config, overrides, arm, seed, out)
                runs.append(Run(arm, seed, workdir))
    except ConfigError as err:
        parser.error(str(err))
    out.mkdir(parents=True, exist_ok=True)
    devices = args.devices.split(",") if args.devices else None
    try:
        train_runs(runs, configs, parallel_runs=args.parallel_runs, devices=devices)
    except AblationError as err:
        log.error("%s", err)
        return 1

    from cmhl_jax.affect import build_affect_tables
    from cmhl_jax.data import split_spec

    first = configs[runs[0].workdir]
    splits = {"val": split_spec(first.data, first.data.val_split)}
    if args.test:
        splits["test"] = args.test
    num_classes = len(build_affect_tables(first.affect).emotion_names)
    rows_by_split, per_run = {}, {run.workdir: {} for run in runs}
    for split, spec in splits.items():
        results = {}
        for run in runs:
            result = evaluate_run(run.workdir, split, spec)
            results[(run.arm.name, run.seed)] = result
            row = per_run[run.workdir]
            row.update(arm=run.arm.name, seed=run.seed, step=result["step"])
            row[f"{split}_num_examples"] = result["num_examples"]
            row.update({f"{split}_{m}": result[m] for m in TABLE_METRICS})
        rows_by_split[split] = summarize(
            results,
            arms,
            num_classes=num_classes,
            resamples=args.resamples,
            bootstrap_seed=args.bootstrap_seed,
        )
    steps = [json.loads((r.workdir / "summary.json").read_text())["step"] for r in runs]
    command = "python -m cmhl_jax.ablation " + shlex.join(argv)
    write_outputs(
        out,
        rows_by_split,
        list(per_run.values()),
        command=command,
        resamples=args.resamples,
        steps=steps,
    )
    print((out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
