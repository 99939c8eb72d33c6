"""Tasks: the registry and one module per task.

A task (`base.Task`) bundles what is computed on top of the encoder's first-token states:
heads, loss, probabilities, the validation report, the selection metric, early stopping and the
per-text prediction record. The model, the train step, the loop and the evaluation tools call
these without knowing which task runs; each task module validates its own config block.

* `emotion`: CMHL_SPEC section 1 (`tasks/emotion.py`);
* `mental_health`: section 2, gated heads and the CE-only baseline (`tasks/mental_health.py`);
* `goemotions`: multi-label GoEmotions, sigmoid heads and multi-label exclusivity
  (`tasks/goemotions.py`, docs/goemotions.md).
"""

from __future__ import annotations

from cmhl_jax.config import ConfigError
from cmhl_jax.tasks import emotion, goemotions, mental_health
from cmhl_jax.tasks.base import EarlyStopping, Task

TASKS = {
    "emotion": emotion.make_task,
    "mental_health": mental_health.make_task,
    "goemotions": goemotions.make_task,
}
# What a task counts in its training split when training starts, written into the config (and
# so kept with the run): the multi-label task's label co-occurrence.
DATA_STATISTICS = {"goemotions": goemotions.count_training_labels}

__all__ = ["TASKS", "EarlyStopping", "Task", "fit_data_statistics", "make_task"]


def fit_data_statistics(config) -> None:
    """Fills the config fields the task takes from its training split (once; see
    `DATA_STATISTICS`)."""
    if count := DATA_STATISTICS.get(config.task):
        count(config)


def make_task(config) -> Task:
    """The task named by `config.task`, built (and its config block checked) from `config`."""
    factory = TASKS.get(config.task)
    if factory is None:
        raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASKS)}")
    return factory(config)
