"""One record per run: the best checkpoint's scores on each split (`OUT/runs/<run>.json`) and
its per-text predictions for the bootstrap (`.npz`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmhl_jax.ablation.arms import AblationError, Run
from cmhl_jax.ablation.runs import flat_config, is_trained
from cmhl_jax.evaluate import evaluate_split, load_trained
from cmhl_jax.tasks import make_task


def spec_id(spec: str) -> str:
    """What identifies a split across machines: a file's name (the folder differs from machine
    to machine), else the spec itself (`hf:...`, `tfds:...`)."""
    return spec if spec.startswith(("hf:", "tfds:")) else Path(spec).name


def _missing_splits(scores: dict, splits: dict[str, str]) -> dict[str, str]:
    """The splits {name: spec} that `scores` (a record's) lacks or has for another spec."""
    return {
        s: spec
        for s, spec in splits.items()
        if spec_id(scores.get(s, {}).get("spec", "")) != spec_id(spec)
    }


def record_has(run: Run, splits: dict[str, str]) -> bool:
    """Whether the run's record (and its predictions) holds every split of `splits`."""
    if not run.record.is_file() or not run.record.with_suffix(".npz").is_file():
        return False
    return not _missing_splits(json.loads(run.record.read_text()).get("scores", {}), splits)


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
    missing = _missing_splits(scores, splits)
    if not missing:
        return record
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
        "config": flat_config(config),
    }
    run.record.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(arrays_path, **arrays)
    run.record.write_text(json.dumps(record, indent=2))
    return record


def bootstrap_inputs(run: Run, split: str, config) -> dict:
    """The per-text arrays of one run on one split, for `stats.paired_bootstrap`."""
    task = make_task(config)
    with np.load(run.record.with_suffix(".npz")) as arrays:
        labels, probs = arrays[f"{split}_labels"], arrays[f"{split}_probs"]
    if task.bootstrap_inputs is None:  # the table gets no CIs
        return {"labels": labels}
    return {"labels": labels, **task.bootstrap_inputs(probs, labels)}
