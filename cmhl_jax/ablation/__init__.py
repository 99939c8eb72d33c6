"""Ablation and sweeps: train every arm x seed, score the best checkpoints, one table.

One module per job (the command and its flags: `cmhl_jax.ablation.cli`):

* `arms`: the plan: arms (built in, `--arm`, `--arms_file`), sweeps, runs and their configs;
* `runs`: training the runs, in this process or in workers pinned to devices;
* `scores`: one record per run (best-checkpoint scores per split, per-text predictions);
* `report`: per-arm mean ± sd and paired bootstrap CIs, ablation.md/.csv/.png, the README block.

`python -m cmhl_jax.ablation` and the `cmhl-ablation` console script run `cli.main`, which is
exported here with the library's names.
"""

from cmhl_jax.ablation.arms import (
    ARMS,
    REFERENCE,
    AblationError,
    Arm,
    Run,
    build_arms,
    load_arms_file,
    parse_arm,
    parse_sweep,
    plan_runs,
    split_overrides,
)
from cmhl_jax.ablation.cli import main
from cmhl_jax.ablation.report import (
    METRIC_TITLES,
    curve_table,
    markdown_table,
    per_run_row,
    summarize,
    update_readme,
    write_outputs,
)
from cmhl_jax.ablation.runs import (
    MACHINE_KEYS,
    config_differences,
    is_trained,
    train_runs,
)
from cmhl_jax.ablation.scores import bootstrap_inputs, record_has, score_run, spec_id, val_curve
from cmhl_jax.config import ConfigError

__all__ = [
    "ARMS",
    "MACHINE_KEYS",
    "METRIC_TITLES",
    "REFERENCE",
    "AblationError",
    "Arm",
    "ConfigError",
    "Run",
    "bootstrap_inputs",
    "build_arms",
    "config_differences",
    "curve_table",
    "is_trained",
    "load_arms_file",
    "main",
    "markdown_table",
    "parse_arm",
    "parse_sweep",
    "per_run_row",
    "plan_runs",
    "record_has",
    "score_run",
    "spec_id",
    "split_overrides",
    "summarize",
    "train_runs",
    "update_readme",
    "val_curve",
    "write_outputs",
]
