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

import logging
import shlex
import sys
from pathlib import Path

from absl import flags

from cmhl_jax import cli
from cmhl_jax.ablation.arms import (
    ARMS,
    AblationError,
    arm_names,
    build_arms,
    load_arms_file,
    parse_arm,
    parse_sweep,
    plan_runs,
)
from cmhl_jax.ablation.report import (
    curve_table,
    per_run_row,
    summarize,
    update_readme,
    write_outputs,
)
from cmhl_jax.ablation.runs import check_same_config, is_trained, train_runs, train_stored_run
from cmhl_jax.ablation.scores import bootstrap_inputs, record_has, score_run
from cmhl_jax.config import override
from cmhl_jax.data import split_spec
from cmhl_jax.runtime import ensure_fast_runtime
from cmhl_jax.tasks import ablation_arms, make_task

log = logging.getLogger("cmhl_jax.ablation")

FLAGS = flags.FlagValues()
cli.define_config_flag(FLAGS)
_OUT = flags.DEFINE_string(
    "out", None, "output dir (runs/, ablation.md, .csv, .png)", flag_values=FLAGS
)
_WORKDIRS = flags.DEFINE_string(
    "workdirs", None, "training workdirs (default OUT/workdirs)", flag_values=FLAGS
)
_SEEDS = flags.DEFINE_integer("seeds", 5, "seeds 0..N-1 per arm", lower_bound=1, flag_values=FLAGS)
_ARMS = flags.DEFINE_list(
    "arms",
    None,
    f"arms to run, from the task's built-in arms (emotion: {','.join(ARMS)}; mental_health: "
    "ce_only,gated; goemotions: ce_only,valence_aux,cmhl) and --arm",
    flag_values=FLAGS,
)
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


def _plan(argv: list[str], out: Path):
    """The arms, the runs (arm x seed) and each run's config, from the flags."""
    custom = load_arms_file(_ARMS_FILE.value) if _ARMS_FILE.value else {}
    custom.update(dict(parse_arm(text) for text in _ARM.value))
    sweeps = [parse_sweep(s) for s in _SWEEP.value]
    config_path = FLAGS["config"].config_filename
    overrides = [arg.removeprefix("--config.") for arg in argv if arg.startswith("--config.")]
    builtin = ablation_arms(override(config_path, overrides).task)  # the task's arms
    names = arm_names(_ARMS.value, custom, sweeps, builtin)
    arms = build_arms(names, sweeps, custom, builtin)
    runs, configs = plan_runs(
        arms,
        _SEEDS.value,
        config_path=config_path,
        overrides=overrides,
        out=out,
        workdirs=Path(_WORKDIRS.value) if _WORKDIRS.value else None,
    )
    return arms, runs, configs


def _tables(runs, arms, records: dict, splits: dict, configs: dict, task) -> dict:
    """{split: summarize()'s rows} over the scored runs."""
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
            num_classes=len(task.label_names),
            resamples=_RESAMPLES.value,
            bootstrap_seed=_BOOTSTRAP_SEED.value,
            metrics=task.table_metrics,
        )
    return rows_by_split


def ablate(argv: list[str]) -> None:
    """Plans, trains and scores the runs that need it, then writes the tables."""
    out = Path(_OUT.value)
    arms, runs, configs = _plan(argv, out)
    first = configs[runs[0]]
    splits = {"val": split_spec(first.data, first.data.val_split)}
    if _TEST.value:
        splits["test"] = _TEST.value
    for run in runs:
        check_same_config(run, configs[run])
    if _REPORT_ONLY.value:
        runs = [r for r in runs if record_has(r, splits) or is_trained(r.workdir)]
        if not runs:
            raise AblationError("--report_only: no run is scored or trained yet")
        arms = [a for a in arms if any(r.arm == a for r in runs)]
    todo = [r for r in runs if not record_has(r, splits)]
    for run in runs:
        if run not in todo:
            log.info("skip %s: scored in %s", run.name, run.record)
    train_runs(
        todo,
        configs,
        parallel_runs=_PARALLEL_RUNS.value,
        devices=_DEVICES.value,
        scored=lambda run: score_run(run, configs[run], splits),
    )
    records = {run: score_run(run, configs[run], splits) for run in runs}
    task = make_task(first)
    write_outputs(
        out,
        _tables(runs, arms, records, splits, configs, task),
        [per_run_row(records[run], splits, task.table_metrics) for run in runs],
        command="python -m cmhl_jax.ablation " + shlex.join(argv),
        resamples=_RESAMPLES.value,
        metrics=task.table_metrics,
        note=task.table_note,
        curves=curve_table([records[run] for run in runs]),
    )
    print((out / "ablation.md").read_text())


def main(argv: list[str] | None = None) -> int:
    """The `cmhl-ablation` command."""
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
            train_stored_run(Path(_TRAIN_RUN.value))
        elif not FLAGS["config"].present or not _OUT.value:
            cli.usage_error("cmhl-ablation", "--config and --out are required")
        else:
            ablate(argv)
    return 0
