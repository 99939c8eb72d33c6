"""Tasks: the registry, one package (or module) per task.

A task (`base.Task`) bundles what is computed on top of the encoder's first-token states:
heads, loss, probabilities, the validation report, the selection metric, early stopping and the
per-text prediction record. The model, the train step, the loop and the evaluation tools call
these without knowing which task runs.

Each task module owns its label knowledge, loss, report and config: it provides
`make_task(config) -> Task`, `default_config_blocks() -> {block: ConfigDict}` (the blocks the
shipped configs add to the generic defaults, configs/default.py) and `validate(config) ->
[problem, ...]` (its blocks' checks), `ABLATION_ARMS` (the ablation's built-in arms, with the
reference `ce_only`), and optionally `count_training_labels(config)` (fields it fills from
its training split when training starts, named in `FITTED_KEYS`). A new task is one package
and one line in `TASKS`.

* `emotion`: CMHL_SPEC section 1 (`tasks/emotion/`);
* `mental_health`: section 2, gated heads and the CE-only baseline (`tasks/mental_health.py`);
* `goemotions`: multi-label GoEmotions, sigmoid heads and multi-label exclusivity
  (`tasks/goemotions/`, docs/goemotions.md).
"""

from __future__ import annotations

import ml_collections

from cmhl_jax.config import ConfigError, generic_problems, raise_problems
from cmhl_jax.tasks import emotion, goemotions, mental_health
from cmhl_jax.tasks.base import EarlyStopping, Task

TASKS = {"emotion": emotion, "mental_health": mental_health, "goemotions": goemotions}

__all__ = [
    "TASKS",
    "EarlyStopping",
    "ablation_arms",
    "Task",
    "default_config_blocks",
    "fit_data_statistics",
    "fitted_config_keys",
    "make_task",
    "validate_config",
]


def _task_module(name: str):
    module = TASKS.get(name)
    if module is None:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return module


def default_config_blocks(task: str) -> dict[str, ml_collections.ConfigDict]:
    """The config blocks task `task` adds to the generic defaults (configs/default.py)."""
    return _task_module(task).default_config_blocks()


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the generic blocks and the task's own; raises one ConfigError listing every
    problem, each naming its field."""
    errors = generic_problems(config)
    if config.task not in TASKS:
        errors.append(f"task must be one of {', '.join(TASKS)}, got {config.task!r}")
    else:
        errors += TASKS[config.task].validate(config)
    raise_problems(errors)


def ablation_arms(task: str) -> dict[str, tuple[str, list[str]]]:
    """The task's built-in ablation arms: name -> (description, config overrides)."""
    return dict(_task_module(task).ABLATION_ARMS)


def fit_data_statistics(config) -> None:
    """Fills the config fields the task takes from its training split (once; the multi-label
    task's label co-occurrence), so they are kept with the run."""
    count = getattr(_task_module(config.task), "count_training_labels", None)
    if count is not None:
        count(config)


def fitted_config_keys() -> tuple[str, ...]:
    """Config keys (flattened, "block.field") that any task fills from its training split."""
    return tuple(key for module in TASKS.values() for key in getattr(module, "FITTED_KEYS", ()))


def make_task(config) -> Task:
    """The task named by `config.task`, built (and its config blocks checked) from `config`."""
    return _task_module(config.task).make_task(config)
