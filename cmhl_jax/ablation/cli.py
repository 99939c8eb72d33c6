"""Ablation and sweeps: train every arm x seed, score the best checkpoints, one table.

    python -m cmhl_jax.ablation --config configs/emotion_minilm.py --out runs/ablation \
        [--seeds 5] [--arms ce_only,aux_heads,cmhl_sum,cmhl_product,cmhl_min] \
        [--arm focal=loss.fn=examples.focal:loss,loss.gamma=2] [--arms_file arms.py] \
        [--test FILE] [--sweep "loss.alpha=0.25,0.5,1.0" --sweep "affect.tau0=0.4,0.5"] \
        [--workdirs DIR] [--parallel_runs N --devices 0,1,...] [--config.a.b=value ...]
    python -m cmhl_jax.ablation --readme README.md --from runs/ablation

An arm is a name plus config overrides. Built in (on top of the config):

* `ce_only`: CE on the emotion head only (alpha = beta = lam = 0), the reference arm;
* `aux_heads`: + valence and intensity heads (lam = 0);
* `cmhl_sum`: + exclusivity term, the paper's sum form (loss.variant=sum);
* `cmhl_product`, `cmhl_min`: the exclusivity term with p_i*p_j or min(p_i, p_j).

More arms without code: `--arm NAME=KEY=VALUE,KEY=VALUE` (repeatable), or `--arms_file F`, a
Python file whose `get_arms()` returns {name: [overrides]}. A plug-in loss is an arm like any
other (`loss.fn=MODULE:FUNCTION` plus its own `loss.<name>` fields). `--sweep KEY=V1,V2,...`
(repeatable) runs the grid of all value combinations on top of each arm (default arm with a
sweep: cmhl_sum); the reference arm is always run too.

Each run trains with `train_and_evaluate` into `WORKDIRS/<arm>_s<seed>` (default
`OUT/workdirs`) and its best checkpoint is scored on val (and `--test`). The scores go to
`OUT/runs/<arm>_s<seed>.json` (metrics, steps, the val curve, the run's config) and `.npz`
(per-text predictions for the bootstrap). A run whose record holds every requested split is
skipped, so the command resumes after an interruption and on another machine from committed
records alone (an interrupted training resumes from its latest checkpoint). Then OUT/ablation.md,
OUT/ablation.csv (per arm), OUT/ablation_runs.csv (per run) and OUT/ablation_<split>.png are
written: per arm the mean ± sd over seeds of the task's table metrics (emotion: accuracy,
macro-F1, weighted-F1, contradiction rate, ECE; goemotions: macro- and micro-F1, contradiction,
false-contradiction rate, mixed recall, ECE), and the paired bootstrap 95% CI of each one's
difference to the reference arm (see `cmhl_jax.stats`: seed i paired with seed i, texts
resampled).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import itertools
import json
import logging
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from absl import flags

from cmhl_jax import cli, stats
from cmhl_jax.config import ConfigError, override, to_json
from cmhl_jax.docs import replace_marked_block
from cmhl_jax.errors import UserError
from cmhl_jax.runtime import ensure_fast_runtime

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
    "micro_f1": "micro-F1",
    "false_contradiction_rate": "false contradiction",
    "mixed_recall": "mixed recall",
}
# Config keys that name places on one machine: a run's record is reused on another machine
# when everything else matches.
MACHINE_KEYS = ("data.local_dir", "data.cache_dir", "model.encoder")


class AblationError(UserError, RuntimeError):
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
    record: Path  # OUT/runs/<arm>_s<seed>.json

    @property
    def name(self) -> str:
        return f"{self.arm.name} seed {self.seed}"


# ------------------------------------------------------------------------------------------
# Arms


def split_overrides(text: str) -> list[str]:
    """`a.b=1,c.d=(16,32)` -> ["a.b=1", "c.d=(16,32)"]: commas split only before a `key=`."""
    return [part for part in re.split(r",(?=[A-Za-z_][\w.]*=)", text) if part]


def parse_arm(text: str) -> tuple[str, list[str]]:
    """`NAME=KEY=VALUE,KEY=VALUE` -> (name, overrides)."""
    name, sep, rest = text.partition("=")
    overrides = split_overrides(rest)
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or not overrides:
        raise ConfigError(f"--arm {text!r} must look like NAME=KEY=VALUE,KEY=VALUE")
    if any("=" not in item for item in overrides):
        raise ConfigError(f"--arm {text!r}: every override must be KEY=VALUE")
    return name, overrides


def load_arms_file(path: str) -> dict[str, list[str]]:
    """The arms of a Python file: `get_arms()` -> {name: [overrides] or "k=v,k=v"}."""
    import runpy

    if not Path(path).is_file():
        raise ConfigError(f"--arms_file {path} not found")
    arms = runpy.run_path(path).get("get_arms", lambda: None)()
    if not isinstance(arms, dict):
        raise ConfigError(f"{path}: get_arms() must return {{name: [overrides]}}")
    return {n: split_overrides(v) if isinstance(v, str) else list(v) for n, v in arms.items()}


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise ConfigError(f"--sweep {text!r} must look like KEY=V1,V2,... e.g. loss.alpha=0.25,0.5")
    return key.strip().removeprefix("config."), items


def build_arms(arm_names: list[str], sweeps: list[tuple[str, list[str]]], custom=None):
    """The arms to run: each named arm (built in or `custom` {name: overrides}), times the
    sweep grid; the reference arm first."""
    custom = dict(custom or {})
    known = {**ARMS, **{name: ("custom: " + ",".join(o), o) for name, o in custom.items()}}
    unknown = [a for a in arm_names if a not in known]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; known: {', '.join(known)}")
    arms = []
    grid = list(itertools.product(*[[(k, v) for v in values] for k, values in sweeps]))
    for name in arm_names:
        description, overrides = known[name]
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


def run_config(base_path: str, overrides: list[str], arm: Arm, seed: int, cache: Path):
    config = override(base_path, [*overrides, *arm.overrides, f"seed={seed}"])
    if not config.data.cache_dir:
        config.data.cache_dir = str(cache)  # tokenise once for all runs
    return config


# ------------------------------------------------------------------------------------------
# Training


def _flat(config) -> dict:
    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(json.loads(to_json(config)) if not isinstance(config, dict) else config))


def config_differences(stored: dict, config) -> list[str]:
    """Keys whose values differ between a run's stored config and `config` (keys only one of
    them has, e.g. fields added by a later version with their defaults, and machine paths do
    not count)."""
    new = _flat(config)
    old = _flat(stored)
    return sorted(k for k in old.keys() & new.keys() if k not in MACHINE_KEYS and old[k] != new[k])


def _check_same_config(run: Run, config) -> None:
    """Refuses a record or workdir of another config (checked before anything trains)."""
    for path in (run.record, run.workdir / "run_config.json"):
        if not path.is_file():
            continue
        stored = json.loads(path.read_text())
        stored = stored.get("config", stored) if path == run.record else stored
        if diff := config_differences(stored, config):
            raise AblationError(
                f"{path} is a run of another config (differs in {', '.join(diff[:5])}); "
                "use a new --out, or the same config and overrides"
            )


def _store_config(run: Run, config) -> None:
    """Writes the run's config into its workdir just before it trains (a worker of
    --parallel_runs reads it; a later command compares with it)."""
    run.workdir.mkdir(parents=True, exist_ok=True)
    if not (run.workdir / "run_config.json").is_file():
        (run.workdir / "run_config.json").write_text(to_json(config))


def is_trained(workdir: Path) -> bool:
    summary = workdir / "summary.json"
    if not summary.is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("stopped_by") in (None, "early_stopping")
    except json.JSONDecodeError:
        return False


def train_in_process(config, workdir: Path) -> None:
    from cmhl_jax.loop import train_and_evaluate

    summary = train_and_evaluate(config, workdir)
    if summary.get("stopped_by") not in (None, "early_stopping"):
        raise AblationError(
            f"{workdir}: stopped by {summary['stopped_by']}; rerun the command to resume"
        )


def train_worker(workdir: Path, device: str | None) -> None:
    """Trains one run in a subprocess pinned to `device` (CUDA_VISIBLE_DEVICES)."""
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    command = [sys.executable, "-m", "cmhl_jax.ablation", "--train_run", str(workdir)]
    with (workdir / "train.log").open("a") as log_file:
        # Our own interpreter and module: no untrusted input.
        result = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603
    if result.returncode != 0 or not is_trained(workdir):
        raise AblationError(
            f"{workdir}: worker exited with {result.returncode}; see {workdir / 'train.log'}"
        )


def train_runs(
    runs: list[Run], configs: dict, *, parallel_runs: int = 1, devices=None, scored=None
) -> None:
    """Trains the runs that need it (no complete record and no finished workdir); `scored(run)`
    is called as soon as each run is trained, so its record is written (and can be committed)
    while the next one trains."""
    pending = [r for r in runs if not is_trained(r.workdir)]
    scored = scored or (lambda run: None)
    for run in pending:
        _store_config(run, configs[run])
    if parallel_runs <= 1:
        for i, run in enumerate(pending):
            log.info("train %s (%d/%d) in %s", run.name, i + 1, len(pending), run.workdir)
            train_in_process(configs[run], run.workdir)
            scored(run)
        return
    slots: queue.Queue = queue.Queue()
    scoring = threading.Lock()
    for k in range(parallel_runs):
        slots.put(devices[k % len(devices)] if devices else str(k))

    def work(run: Run) -> None:
        device = slots.get()
        try:
            log.info("train %s on device %s in %s", run.name, device, run.workdir)
            train_worker(run.workdir, device)
        finally:
            slots.put(device)
        with scoring:  # one evaluation at a time in this process
            scored(run)

    with concurrent.futures.ThreadPoolExecutor(parallel_runs) as pool:
        failures = [f.exception() for f in [pool.submit(work, r) for r in pending]]
    failures = [f for f in failures if f is not None]
    if failures:
        raise AblationError("; ".join(str(f) for f in failures))


# ------------------------------------------------------------------------------------------
# Scoring: one record per run


def spec_id(spec: str) -> str:
    """What identifies a split across machines: a file's name (the folder differs from machine
    to machine), else the spec itself (`hf:...`, `tfds:...`)."""
    return spec if spec.startswith(("hf:", "tfds:")) else Path(spec).name


def val_curve(workdir: Path) -> list[dict]:
    """The epoch-end validation records of a run's metrics.jsonl."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {k: r[k] for k in ("step", "epoch", "val_accuracy", "val_macro_f1") if k in r}
        for r in records
        if "val_macro_f1" in r
    ]


def score_run(run: Run, config, splits: dict[str, str]) -> dict:
    """Scores the run's best checkpoint on every split missing from its record and writes
    the record (JSON) and the per-text predictions (NPZ)."""
    record = json.loads(run.record.read_text()) if run.record.is_file() else {}
    arrays_path = run.record.with_suffix(".npz")
    arrays = dict(np.load(arrays_path)) if arrays_path.is_file() else {}
    scores = record.get("scores", {})
    missing = {
        s: spec
        for s, spec in splits.items()
        if spec_id(scores.get(s, {}).get("spec", "")) != spec_id(spec)
    }
    if not missing:
        return record
    from cmhl_jax.evaluate import evaluate_split, load_trained

    if not is_trained(run.workdir):
        raise AblationError(f"{run.name}: {run.record} lacks {sorted(missing)}, no trained run")
    trained = load_trained(run.workdir, "best")
    for split, spec in missing.items():
        report, examples, probs = evaluate_split(trained, spec)
        keys = (*trained.task.table_metrics, "num_examples")
        scores[split] = {"spec": spec, **{k: report[k] for k in keys if k in report}}
        arrays[f"{split}_labels"] = examples.labels.astype(np.int16)
        arrays[f"{split}_probs"] = probs[trained.task.primary].astype(np.float32)
    summary = json.loads((run.workdir / "summary.json").read_text())
    record = {
        "arm": run.arm.name,
        "seed": run.seed,
        "overrides": list(run.arm.overrides),
        "steps": summary["step"],
        "best_step": trained.step,
        "wall_time_s": summary.get("wall_time_s"),
        "scores": scores,
        "val_curve": val_curve(run.workdir),
        "config": _flat(config),
    }
    run.record.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(arrays_path, **arrays)
    run.record.write_text(json.dumps(record, indent=2))
    return record


def bootstrap_inputs(run: Run, split: str, config) -> dict:
    """The per-text arrays of one run on one split, for `stats.paired_bootstrap`."""
    from cmhl_jax.tasks import make_task

    task = make_task(config)
    with np.load(run.record.with_suffix(".npz")) as arrays:
        labels, probs = arrays[f"{split}_labels"], arrays[f"{split}_probs"]
    if task.bootstrap_inputs is None:  # the table gets no CIs
        return {"labels": labels}
    return {"labels": labels, **task.bootstrap_inputs(probs, labels)}


# ------------------------------------------------------------------------------------------
# The table


def summarize(
    results: dict[tuple[str, int], dict],
    arms: list[Arm],
    *,
    num_classes: int,
    resamples: int,
    bootstrap_seed: int,
    metrics: tuple[str, ...] = TABLE_METRICS,
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


def markdown_table(
    rows: list[dict], *, split: str, metrics: tuple[str, ...] = TABLE_METRICS
) -> str:
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


def write_outputs(
    out: Path,
    rows_by_split: dict,
    per_run: list[dict],
    *,
    command: str,
    resamples: int,
    metrics: tuple[str, ...] = TABLE_METRICS,
    note: str = "",
    curves: str = "",
) -> None:
    from cmhl_jax.plots import plot_ablation

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


def per_run_row(record: dict, splits, metrics: tuple[str, ...] = TABLE_METRICS) -> dict:
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


def update_readme(readme: str | Path, table_md: str | Path, block: str = "ablation") -> None:
    """Replaces the text between the `block` markers of `readme` with `table_md`'s text."""
    try:
        replace_marked_block(readme, block, Path(table_md).read_text())
    except ValueError as err:
        raise AblationError(str(err)) from None


# ------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FlagValues()
cli.define_config_flag(FLAGS)
_OUT = flags.DEFINE_string(
    "out", None, "output dir (runs/, ablation.md, .csv, .png)", flag_values=FLAGS
)
_WORKDIRS = flags.DEFINE_string(
    "workdirs", None, "training workdirs (default OUT/workdirs)", flag_values=FLAGS
)
_SEEDS = flags.DEFINE_integer("seeds", 5, "seeds 0..N-1 per arm", lower_bound=1, flag_values=FLAGS)
_ARMS = flags.DEFINE_list("arms", None, f"arms to run, from {','.join(ARMS)}", flag_values=FLAGS)
_ARM = flags.DEFINE_multi_string(
    "arm", [], "a custom arm: NAME=KEY=VALUE,KEY=VALUE (repeatable)", flag_values=FLAGS
)
_ARMS_FILE = flags.DEFINE_string(
    "arms_file", None, "Python file with get_arms() -> {name: [overrides]}", flag_values=FLAGS
)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "KEY=V1,V2,... (grid)", flag_values=FLAGS)
_TEST = flags.DEFINE_string(
    "test", None, "also score this split (file or hf:...)", flag_values=FLAGS
)
_RESAMPLES = flags.DEFINE_integer("resamples", 2000, "bootstrap resamples", flag_values=FLAGS)
_BOOTSTRAP_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "bootstrap seed", flag_values=FLAGS)
_PARALLEL_RUNS = flags.DEFINE_integer(
    "parallel_runs", 1, "worker processes", lower_bound=1, flag_values=FLAGS
)
_DEVICES = flags.DEFINE_list("devices", None, "CUDA device ids for the workers", flag_values=FLAGS)
_README = flags.DEFINE_string("readme", None, "README to update (with --from)", flag_values=FLAGS)
_README_BLOCK = flags.DEFINE_string(
    "readme_block", "ablation", "the README's marked block to replace", flag_values=FLAGS
)
_FROM = flags.DEFINE_string("from", None, "ablation output dir (with --readme)", flag_values=FLAGS)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only",
    False,
    "train nothing: the table over the runs already scored or trained",
    flag_values=FLAGS,
)
_TRAIN_RUN = flags.DEFINE_string(
    "train_run", None, "(internal) worker: train one workdir", flag_values=FLAGS
)


def plan_runs(argv_overrides: list[str], out: Path) -> tuple[list[Arm], list[Run], dict]:
    """The arms, the runs (arm x seed) and each run's config, from the flags."""
    custom = load_arms_file(_ARMS_FILE.value) if _ARMS_FILE.value else {}
    custom.update(dict(parse_arm(text) for text in _ARM.value))
    sweeps = [parse_sweep(s) for s in _SWEEP.value]
    names = _ARMS.value or ([] if custom else ["cmhl_sum"] if sweeps else list(ARMS))
    names = [*names, *(name for name in custom if name not in names)]
    arms = build_arms(names, sweeps, custom)
    workdirs = Path(_WORKDIRS.value) if _WORKDIRS.value else out / "workdirs"
    runs, configs = [], {}
    for arm in arms:
        for seed in range(_SEEDS.value):
            name = f"{arm.dirname}_s{seed}"
            run = Run(arm, seed, workdirs / name, out / "runs" / f"{name}.json")
            configs[run] = run_config(
                FLAGS["config"].config_filename,
                argv_overrides,
                arm,
                seed,
                workdirs.parent / "cache",
            )
            runs.append(run)
    return arms, runs, configs


def ablate(argv: list[str]) -> None:
    out = Path(_OUT.value)
    overrides = [arg.removeprefix("--config.") for arg in argv if arg.startswith("--config.")]
    arms, runs, configs = plan_runs(overrides, out)
    first = configs[runs[0]]
    from cmhl_jax.data import split_spec

    splits = {"val": split_spec(first.data, first.data.val_split)}
    if _TEST.value:
        splits["test"] = _TEST.value
    for run in runs:
        _check_same_config(run, configs[run])
    if _REPORT_ONLY.value:
        runs = [r for r in runs if _record_has(r, splits) or is_trained(r.workdir)]
        if not runs:
            raise AblationError("--report_only: no run is scored or trained yet")
        arms = [a for a in arms if any(r.arm == a for r in runs)]
    todo = [r for r in runs if not _record_has(r, splits)]
    for run in runs:
        if run not in todo:
            log.info("skip %s: scored in %s", run.name, run.record)
    devices = _DEVICES.value
    train_runs(
        todo,
        configs,
        parallel_runs=_PARALLEL_RUNS.value,
        devices=devices,
        scored=lambda run: score_run(run, configs[run], splits),
    )
    records = {run: score_run(run, configs[run], splits) for run in runs}
    from cmhl_jax.tasks import make_task

    task = make_task(first)
    metrics, num_classes = task.table_metrics, len(task.label_names)
    rows_by_split = {}
    for split in splits:
        results = {
            (run.arm.name, run.seed): {
                **records[run]["scores"][split],
                **bootstrap_inputs(run, split, configs[run]),
            }
            for run in runs
        }
        rows_by_split[split] = summarize(
            results,
            arms,
            num_classes=num_classes,
            resamples=_RESAMPLES.value,
            bootstrap_seed=_BOOTSTRAP_SEED.value,
            metrics=metrics,
        )
    per_run = [per_run_row(records[run], splits, metrics) for run in runs]
    command = "python -m cmhl_jax.ablation " + shlex.join(argv)
    write_outputs(
        out,
        rows_by_split,
        per_run,
        command=command,
        resamples=_RESAMPLES.value,
        metrics=metrics,
        note=task.table_note,
        curves=curve_table([records[run] for run in runs]),
    )
    print((out / "ablation.md").read_text())


def _record_has(run: Run, splits: dict[str, str]) -> bool:
    if not run.record.is_file() or not run.record.with_suffix(".npz").is_file():
        return False
    scores = json.loads(run.record.read_text()).get("scores", {})
    return all(
        spec_id(scores.get(split, {}).get("spec", "")) == spec_id(spec)
        for split, spec in splits.items()
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli.parse(FLAGS, argv, "cmhl-ablation", __doc__)
    ensure_fast_runtime()
    cli.setup_logging()
    with cli.user_errors("cmhl-ablation"):
        if _README.value or _FROM.value:
            if not (_README.value and _FROM.value):
                cli.usage_error("cmhl-ablation", "--readme and --from go together")
            update_readme(_README.value, Path(_FROM.value) / "ablation.md", _README_BLOCK.value)
            print(f"updated {_README.value} from {Path(_FROM.value) / 'ablation.md'}")
        elif _TRAIN_RUN.value:  # a worker of --parallel_runs
            from ml_collections import ConfigDict

            workdir = Path(_TRAIN_RUN.value)
            config = ConfigDict(json.loads((workdir / "run_config.json").read_text()))
            train_in_process(config, workdir)
        elif not FLAGS["config"].present or not _OUT.value:
            cli.usage_error("cmhl-ablation", "--config and --out are required")
        else:
            ablate(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
