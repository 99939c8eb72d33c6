"""What every task provides to the model, the train step, the loop and the evaluation tools.

A `Task` bundles pure functions built from the config. Nothing outside `cmhl_jax/tasks/` asks
which task runs: the loop reads the selection metric and early stopping from the task, and
`eval.py` and the predict CLI format per-text predictions with `Task.records`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class EarlyStopping:
    """Stops after `patience` consecutive evaluations without a strictly better `metric`
    (higher is better); patience 0 never stops. The state round-trips through checkpoint
    metadata (`state_dict` / `from_state_dict`) so a resumed run counts on."""

    metric: str = "macro_f1"
    patience: int = 3
    best: float | None = None
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Records one evaluation's value of `metric`; True when training should stop."""
        value = float(value)
        if self.best is None or value > self.best:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: Mapping) -> EarlyStopping:
        return cls(**state)


def softmax_outputs(outputs: dict, keep: tuple[str, ...] = ()) -> dict:
    """Softmax over the last axis of every output except those named in `keep`."""
    return {
        name: value if name in keep else jax.nn.softmax(value, axis=-1)
        for name, value in outputs.items()
    }


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """What a task computes on top of the encoder's first-token states.

    init_heads(key, hidden_size) -> head params
    apply_heads(head_params, hidden, *, dropout_rate, rng) -> outputs (logits, gate, ...)
    loss(outputs, head_params, labels, weights, normalizer) -> (total, terms)
    probabilities(outputs) -> {name: probabilities or weights}
    report(probs as numpy, labels, reference=None) -> validation metrics (floats, and nested
        per-class dicts); `reference` is the selected checkpoint's validation report, for what
        a task fixes on the validation split (the multi-label task's tuned thresholds)
    """

    name: str
    label_names: tuple[str, ...]
    primary: str  # the output holding the class prediction
    init_heads: Callable
    apply_heads: Callable
    loss: Callable
    probabilities: Callable
    report: Callable
    head_sizes: tuple[tuple[str, int], ...]
    # Label names of each classifier output (outputs without labels, e.g. gate weights, absent).
    head_labels: Mapping[str, tuple[str, ...]]
    selection_metric: str  # the validation metric that selects the "best" checkpoint
    prediction_key: str = "prediction"  # record key of the predicted class name
    summary_metrics: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1", "ece")
    early_stopping: EarlyStopping | None = None  # the rule; the loop keeps its own copy
    tables: Any = None  # the emotion task's affect tables (`tasks.emotion.affect`)
    # Extra per-text fields from the probabilities, e.g. the emotion task's consistency score.
    record_extras: Callable[[dict], dict[str, np.ndarray]] | None = None
    # The report metrics of the ablation table (`cmhl_jax.ablation`), mean ± sd over seeds.
    table_metrics: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1", "ece")
    # What the ablation table's task-specific metrics mean (one sentence or two).
    table_note: str = "ECE: equal-width confidence bins (eval.ece_bins)."
    # (primary probabilities [N, C], labels) -> per-text arrays for the ablation's paired
    # bootstrap (`stats.per_text_inputs`, `stats.multilabel_inputs`); None: no bootstrap CIs.
    bootstrap_inputs: Callable[[np.ndarray, np.ndarray], dict] | None = None

    def gold_record(self, label) -> str | list[str]:
        """A gold label as JSON: the class name of an id, or the names of a multi-hot row."""
        label = np.asarray(label)
        if label.ndim == 0:
            return self.label_names[int(label)]
        return [self.label_names[int(i)] for i in np.flatnonzero(label > 0)]

    def new_early_stopping(self) -> EarlyStopping | None:
        return dataclasses.replace(self.early_stopping) if self.early_stopping else None

    def records(self, probs: Mapping[str, np.ndarray]) -> list[dict]:
        """One JSON-ready dict per text, shared by `eval.py` predictions and the predict CLI.

        The primary output gives `<prediction_key>` (its top label), `confidence` and
        `probabilities`; every other labelled output gives `<name>` and
        `<name>_probabilities`; outputs without labels (gate weights) are lists under their
        own name; `record_extras` adds task-specific fields.
        """
        count = len(next(iter(probs.values()))) if probs else 0
        records: list[dict] = [{} for _ in range(count)]
        for name in sorted(probs, key=lambda n: n != self.primary):
            value = np.asarray(probs[name])
            rounded = value.astype(np.float64).round(6)
            labels = self.head_labels.get(name)
            if labels is None:
                for record, row in zip(records, rounded.tolist(), strict=True):
                    record[name] = row
                continue
            primary = name == self.primary
            top = value.argmax(-1)
            for i, record in enumerate(records):
                record[self.prediction_key if primary else name] = labels[int(top[i])]
                if primary:
                    record["confidence"] = round(float(value[i, top[i]]), 6)
                key = "probabilities" if primary else f"{name}_probabilities"
                record[key] = dict(zip(labels, rounded[i].tolist(), strict=True))
        if self.record_extras is not None and self.primary in probs:
            for field, values in self.record_extras(probs).items():
                # Lists stay lists: per-text values may be ragged (a label list per text).
                values = values.tolist() if isinstance(values, np.ndarray) else list(values)
                for record, v in zip(records, values, strict=True):
                    record[field] = round(v, 6) if isinstance(v, float) else v
        return records
