"""`train_and_evaluate(config, workdir)`: the training loop.

One flat loop over steps, in labelled sections (input, update step, logging, evals and
checkpoints, preemption), after the set-up (model, input, update step, checkpoint restore).
The run's bookkeeping (step, data position, best metric, skipped steps, early stopping, why it
stopped) is one `RunState`, saved in every checkpoint's metadata and restored on resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from cmhl_jax import data as data_lib
from cmhl_jax.augment import augment_texts, wordnet_synonyms
from cmhl_jax.checkpoint import Checkpoints
from cmhl_jax.cluster import WorkdirLock, setup_distributed
from cmhl_jax.config import ConfigError, to_json
from cmhl_jax.errors import UserError
from cmhl_jax.evaluate import predict_all
from cmhl_jax.metrics_log import MetricsWriter
from cmhl_jax.model import ModelDef, build_model
from cmhl_jax.parallel import Parallel
from cmhl_jax.paths import is_local, workdir_path
from cmhl_jax.runtime import release_free_memory
from cmhl_jax.step import init_train_state, make_optimizer, predict_step, train_step
from cmhl_jax.tasks import EarlyStopping, Task, fit_data_statistics, make_task, validate_config

log = logging.getLogger("cmhl_jax")


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss or the gradients became NaN or inf; the message names the step and term."""


# ------------------------------------------------------------------------------------------
# Checks before anything is loaded


def check_workdir(workdir: Path, needed_bytes: int = 0) -> None:
    """Fails before training when the workdir is unwritable (PermissionError) or the disk
    cannot hold a checkpoint (OSError; two copies exist while a new one is written)."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # One probe per process: the processes of a multi-host run share the workdir.
        probe = workdir / f".write_probe.{socket.gethostname()}.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"workdir {workdir} is not writable: {err}") from None
    if not is_local(workdir):  # remote storage (gs://...): no free-space figure to check
        return
    free = shutil.disk_usage(os.fspath(workdir)).free
    if free < needed_bytes:
        raise OSError(
            f"workdir {workdir}: {free / 2**20:.0f} MiB free, a checkpoint needs about "
            f"{needed_bytes / 2**20:.0f} MiB"
        )


def check_batch_sizes(config) -> None:
    """The global batches must split evenly over the devices of the parallel mode (checked
    before the model is loaded)."""
    mode = config.parallel.mode
    devices = 1 if mode == "single" else jax.device_count()
    errors = []
    if config.batch_size % devices:
        errors.append(f"batch_size={config.batch_size} must divide by the {devices} devices")
    if config.eval_batch_size * jax.process_count() % devices:
        errors.append(
            f"eval_batch_size={config.eval_batch_size} (x {jax.process_count()} processes) "
            f"must divide by the {devices} devices"
        )
    if errors:
        raise ConfigError(f"parallel.mode={mode}: " + "; ".join(errors))


# ------------------------------------------------------------------------------------------
# Run bookkeeping


@dataclasses.dataclass
class RunState:
    """Where the run is and what it has seen; round-trips through checkpoint metadata."""

    step: int = 0  # train batches consumed (micro-steps when accumulating)
    epoch: int = 0  # the epoch the next batch belongs to
    batch: int = 0  # batches of `epoch` already consumed
    best_metric: float | None = None
    skipped_steps: int = 0
    early_stopping: EarlyStopping | None = None
    stopped_by: str | None = None  # "early_stopping", "SIGTERM", "SIGINT" or None

    def advance(self, epoch_length: int) -> None:
        """One batch done; an epoch's last batch moves the position to the next epoch."""
        self.step += 1
        self.batch += 1
        if self.batch == epoch_length:
            self.epoch, self.batch = self.epoch + 1, 0

    @property
    def epoch_ended(self) -> bool:
        return self.batch == 0 and self.step > 0

    @property
    def last_epoch(self) -> int:
        """The epoch of the last batch consumed."""
        return self.epoch - 1 if self.epoch_ended else self.epoch

    def to_meta(self) -> dict:
        return {
            "position": {"epoch": self.epoch, "batch": self.batch},
            "best_metric": self.best_metric,
            "skipped_steps": self.skipped_steps,
            "early_stopping": self.early_stopping and self.early_stopping.state_dict(),
            "stopped_by": self.stopped_by,
        }

    @classmethod
    def from_meta(cls, meta: dict, step: int, early_stopping: EarlyStopping | None) -> RunState:
        if early_stopping is not None and meta.get("early_stopping"):
            early_stopping = EarlyStopping.from_state_dict(meta["early_stopping"])
        return cls(
            step=step,
            epoch=meta["position"]["epoch"],
            batch=meta["position"]["batch"],
            best_metric=meta.get("best_metric"),
            skipped_steps=meta.get("skipped_steps", 0),
            early_stopping=early_stopping,
            # An early-stopped run is finished: a restart does not train on.
            stopped_by="early_stopping" if meta.get("stopped_by") == "early_stopping" else None,
        )


class StepMetrics:
    """Per-step metrics (device arrays) since the last log record. `check` fetches them and
    stops at a non-finite step (or counts it with `skip_nonfinite`; its update was not applied)
    before anything after it is logged or saved: the only host syncs of the inner loop."""

    def __init__(self, skip_nonfinite: bool):
        self.skip_nonfinite = skip_nonfinite
        self._pending: list[tuple[int, dict]] = []
        self._checked: list[dict] = []

    def add(self, step: int, metrics: dict) -> None:
        self._pending.append((step, metrics))

    def check(self) -> int:
        """Fetches and checks the pending steps; returns how many were skipped."""
        steps = [step for step, _ in self._pending]
        fetched = jax.device_get([metrics for _, metrics in self._pending])
        self._pending.clear()
        bad = [(step, m) for step, m in zip(steps, fetched, strict=True) if m["nonfinite"] > 0]
        if bad and not self.skip_nonfinite:
            step, metrics = bad[0]
            terms = [k for k, v in metrics.items() if not np.isfinite(v)] or ["gradients"]
            terms.sort(key=lambda k: (k != "loss", k == "grad_norm", k))  # loss first
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (terms: {', '.join(terms)}); its update was not "
                "applied and the last good checkpoint is kept. Lower the learning rate, set "
                "optim.grad_clip, or pass --config.skip_nonfinite=true to skip such steps."
            )
        self._checked.extend(fetched)
        return len(bad)

    def pop_mean(self) -> dict:
        """The mean of every checked metric since the last call."""
        mean = {k: float(np.mean([m[k] for m in self._checked])) for k in self._checked[0]}
        self._checked.clear()
        return mean


class PreemptionFlag:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, saves, and exits cleanly."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal_name and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.signal_name = name  # (no logging here: a handler may interrupt the logger)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------
# Input


@dataclasses.dataclass
class TrainData:
    """The tokenised train and val splits and the epoch plans built from them."""

    config: ml_collections.ConfigDict
    train: data_lib.Examples
    train_ids: list
    val: data_lib.Examples
    val_ids: list
    tokenizer: object
    options: data_lib.BatchOptions
    _plans: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, config, task: Task, tokenizer, workdir: Path) -> TrainData:
        data_cfg = config.data
        # The token cache is a local file cache: under a local workdir, else none.
        cache_dir = data_cfg.cache_dir or (str(workdir / "cache") if is_local(workdir) else None)
        train, val = (
            data_lib.load_split(
                data_lib.split_spec(data_cfg, split),
                list(task.label_names),
                skip_bad_lines=data_cfg.skip_bad_lines,
            )
            for split in (data_cfg.train_split, data_cfg.val_split)
        )
        data_lib.warn_overlap(train, val)
        train_ids = data_lib.tokenize_split(train, tokenizer, data_cfg, cache_dir)
        val_ids = data_lib.tokenize_split(val, tokenizer, data_cfg, cache_dir)
        options = data_lib.BatchOptions.from_config(data_cfg)
        return cls(config, train, train_ids, val, val_ids, tokenizer, options)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def _augmenting(self) -> bool:
        augment = self.config.get("augment")
        return augment is not None and bool(augment.synonym_p or augment.delete_p)

    def epoch_plan(self, epoch: int) -> data_lib.EpochPlan:
        """The batches of one epoch, planned once (the texts augmented afresh each epoch when
        configured, from (seed, epoch), so a resumed epoch gets the same batches)."""
        augmenting = self._augmenting()
        if epoch not in self._plans or augmenting:
            ids = self._augmented_ids(epoch) if augmenting else self.train_ids
            self._plans[epoch] = data_lib.EpochPlan.build(
                ids,
                self.train.labels,
                options=self.options,
                batch_size=self.config.batch_size,
                seed=self.config.seed,
                epoch=epoch,
            )
        return self._plans.pop(epoch) if augmenting else self._plans[epoch]

    def _augmented_ids(self, epoch: int) -> list:
        augment_cfg = self.config.augment
        synonyms = None
        if augment_cfg.synonym_p:
            synonyms = wordnet_synonyms(allow_missing=augment_cfg.allow_missing_wordnet)
        texts = augment_texts(
            self.train.texts,
            self.config.seed,
            epoch,
            p_synonym=augment_cfg.synonym_p if synonyms else 0.0,
            p_delete=augment_cfg.delete_p,
            synonyms=synonyms,
        )
        data_cfg = self.config.data
        return data_lib.tokenize(
            texts, self.tokenizer, data_cfg.max_length, truncation=data_cfg.truncation
        )

    def total_steps(self) -> int:
        """Micro-steps of the whole run: the epochs' batch counts (of the un-augmented texts,
        which sets the learning-rate schedule), capped by `max_steps`."""
        steps = 0
        for epoch in range(self.config.num_epochs):
            plan = data_lib.EpochPlan.build(
                self.train_ids,
                self.train.labels,
                options=self.options,
                batch_size=self.config.batch_size,
                seed=self.config.seed,
                epoch=epoch,
            )
            if not self._augmenting():
                self._plans[epoch] = plan  # reused when the epoch comes
            steps += len(plan)
        return min(steps, self.config.max_steps) if self.config.max_steps > 0 else steps


# ------------------------------------------------------------------------------------------
# The run's fixed parts


@dataclasses.dataclass
class Trainer:
    """What the loop needs besides the train state and the run's bookkeeping."""

    config: ml_collections.ConfigDict
    workdir: Path
    task: Task
    model_def: ModelDef
    data: TrainData
    parallel: Parallel
    checkpoints: Checkpoints
    total_steps: int
    is_main: bool

    def batches(self, run: RunState):
        """(epoch length, global batch) from the run's position to the end of training."""
        for epoch in range(run.epoch, self.config.num_epochs):
            plan = self.data.epoch_plan(epoch)
            for batch in plan.batches(pad_id=self.data.pad_id, start=run.batch):
                if run.stopped_by or run.step >= self.total_steps:
                    return
                yield len(plan), batch

    def local_rows(self, batch: dict) -> dict:
        return data_lib.shard_batch(batch, jax.process_count(), jax.process_index())

    def save(self, state, run: RunState, metrics: StepMetrics, report: dict | None = None):
        """Checks the pending steps for NaN (nothing after a bad step is saved), then saves."""
        run.skipped_steps += metrics.check()
        meta = {
            **run.to_meta(),
            "model": self.model_def.fingerprint(),
            "val": report and {k: v for k, v in report.items() if k != "per_class"},
        }
        self.checkpoints.save(run.step, self.parallel.get_state(state), meta, val_metrics=report)
        release_free_memory()  # the host copy is freed now; or RSS grows by it with every save

    def evaluate_and_save(self, state, run: RunState, metrics: StepMetrics, writer) -> dict:
        """The epoch-end (or last-step) evaluation on val, early stopping, and the checkpoint."""
        probs = predict_all(
            self.parallel,
            state.params,
            self.data.val_ids,
            self.data.val.labels,
            batch_size=self.config.eval_batch_size,
            pad_id=self.data.pad_id,
            data_cfg=self.config.data,
        )
        report = self.task.report(probs, self.data.val.labels)
        metric = self.task.selection_metric
        value = report[metric]
        run.best_metric = value if run.best_metric is None else max(run.best_metric, value)
        scalars = {f"val_{k}": v for k, v in report.items() if isinstance(v, float)}
        if writer:
            writer.write({"step": run.step, "epoch": run.last_epoch, **scalars})
        log.info("epoch %d step %d val %s=%.4f", run.last_epoch, run.step, metric, value)
        stopping = run.early_stopping
        if stopping and stopping.update(report[stopping.metric]):
            run.stopped_by = "early_stopping"
            log.info(
                "early stopping: %d epochs without a better val %s",
                stopping.bad_epochs,
                stopping.metric,
            )
        self.save(state, run, metrics, report)
        return report

    def log_train(self, run: RunState, metrics: StepMetrics, meter: Throughput, writer) -> dict:
        run.skipped_steps += metrics.check()
        record = metrics.pop_mean()
        record.update(
            step=run.step,
            epoch=run.last_epoch,
            samples_per_s=meter.rate(),
            compiles=self.parallel.compiles,
            skipped_steps=run.skipped_steps,
        )
        if writer:
            writer.write(record)
        return record

    def write_summary(self, run: RunState, report: dict | None, wall_time_s: float) -> dict:
        summary = {
            "step": run.step,
            "stopped_by": run.stopped_by,
            "best_" + self.task.selection_metric: run.best_metric,
            "skipped_steps": run.skipped_steps,
            "wall_time_s": wall_time_s,
            "compiles": self.parallel.compiles,
            "val": report and {k: v for k, v in report.items() if k != "per_class"},
        }
        if self.is_main:
            (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


class Throughput:
    """Texts per second since the last `rate()`."""

    def __init__(self):
        self.texts, self.since = 0, time.perf_counter()

    def add(self, batch: dict) -> None:
        self.texts += int(np.count_nonzero(batch["text_mask"]))

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.texts / max(now - self.since, 1e-9)
        self.texts, self.since = 0, now
        return rate


# ------------------------------------------------------------------------------------------
# Set-up


def restore_or_start(trainer: Trainer, host_state) -> tuple[object, RunState]:
    """The latest checkpoint's state and bookkeeping, or a fresh run."""
    early_stopping = trainer.task.new_early_stopping()
    if trainer.is_main:
        trainer.checkpoints.remove_unfinished()
    if not trainer.checkpoints.has_any():
        return host_state, RunState(early_stopping=early_stopping)
    host_state, meta = trainer.checkpoints.restore(
        "latest",
        jax.device_get(host_state),
        fingerprint=trainer.model_def.fingerprint(),
        quarantine=trainer.is_main,  # a corrupt newest one is moved aside, not overwritten
    )
    run = RunState.from_meta(meta, int(host_state.step), early_stopping)
    log.info("resumed from step %d (epoch %d, batch %d)", run.step, run.epoch, run.batch)
    return host_state, run


def build_trainer(config, workdir: Path, task: Task, is_main: bool):
    """Model, input, update step and checkpoints; returns (trainer, device state, run)."""
    # --- model ---------------------------------------------------------------------------
    model_def, params, tokenizer = build_model(config.model, task, seed=config.seed)
    param_bytes = sum(x.size * 4 for x in jax.tree_util.tree_leaves(params))
    # Free space, before tokenisation and training: params + Adam moments, two copies.
    check_workdir(workdir, needed_bytes=2 * 3 * param_bytes)
    # --- input ---------------------------------------------------------------------------
    data = TrainData.load(config, task, tokenizer, workdir)
    total_steps = data.total_steps()
    accum = int(config.optim.accum_steps)
    # --- update step ---------------------------------------------------------------------
    tx, schedule = make_optimizer(config.optim, max(total_steps // accum, 1))
    step_fn = functools.partial(
        train_step, model_def=model_def, tx=tx, schedule=schedule, accum_steps=accum
    )
    parallel = Parallel(
        config.parallel.mode, step_fn, functools.partial(predict_step, model_def=model_def)
    )
    # --- checkpoint ----------------------------------------------------------------------
    checkpoints = Checkpoints(
        workdir, keep_best=config.checkpoint.keep_best, metric=task.selection_metric
    )
    trainer = Trainer(
        config, workdir, task, model_def, data, parallel, checkpoints, total_steps, is_main
    )
    host_state, run = restore_or_start(trainer, init_train_state(params, tx, config.seed))
    # Written only now: a run refused by the checkpoint checks above leaves the workdir's
    # config.json (which eval.py rebuilds the model from) untouched.
    if is_main:
        (workdir / "config.json").write_text(to_json(config))
    return trainer, parallel.put(host_state), run


# ------------------------------------------------------------------------------------------
# Train and evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains on the train split, evaluates on val every epoch, keeps the best checkpoints.

    Returns the final summary (also written to <workdir>/summary.json).
    """
    validate_config(config)
    workdir = workdir_path(workdir)  # a local folder or a URL (gs://...)
    check_workdir(workdir)  # unwritable: fail before loading anything
    setup_distributed(config.parallel)  # before any jax computation (make_task traces the loss)
    fit_data_statistics(config)  # kept in config.json, so evaluation needs no training data
    task = make_task(config)
    check_batch_sizes(config)
    is_main = jax.process_index() == 0
    with WorkdirLock(workdir) if is_main else contextlib.nullcontext():
        trainer, state, run = build_trainer(config, workdir, task, is_main)
        return train_loop(trainer, state, run)


def train_loop(trainer: Trainer, state, run: RunState) -> dict:
    """The loop over steps: one exit (the end, early stopping or a signal)."""
    config, start_time = trainer.config, time.perf_counter()
    metrics, meter = StepMetrics(config.skip_nonfinite), Throughput()
    writer = None
    if trainer.is_main:
        writer = MetricsWriter(trainer.workdir, config, resume_step=run.step)
    preemption = PreemptionFlag()
    progress = tqdm(
        total=trainer.total_steps, initial=run.step, disable=not trainer.is_main, desc="train"
    )
    report = None
    try:
        for epoch_length, batch in trainer.batches(run):
            # --- update step -----------------------------------------------------------
            state, step_metrics = trainer.parallel.step(state, trainer.local_rows(batch))
            run.advance(epoch_length)
            metrics.add(run.step, step_metrics)
            meter.add(batch)
            progress.update(1)
            last = run.step >= trainer.total_steps or (
                run.epoch_ended and run.epoch == config.num_epochs
            )
            # --- logging ---------------------------------------------------------------
            if run.step % config.log_every == 0 or last:
                record = trainer.log_train(run, metrics, meter, writer)
                progress.set_postfix(loss=f"{record['loss']:.4f}")
            # --- evals and checkpoints -------------------------------------------------
            saved = run.epoch_ended or last
            if saved:
                report = trainer.evaluate_and_save(state, run, metrics, writer)
            elif config.checkpoint.every_steps and run.step % config.checkpoint.every_steps == 0:
                trainer.save(state, run, metrics)
                saved = True
            # --- preemption: the only place a signal is looked at ----------------------
            if preemption.signal_name and not last:
                run.stopped_by = preemption.signal_name
                if not saved:
                    trainer.save(state, run, metrics)
                log.warning(
                    "preempted by %s: saved a checkpoint at step %d (epoch %d, batch %d); "
                    "rerun the same command to resume",
                    run.stopped_by,
                    run.step,
                    run.epoch,
                    run.batch,
                )
            if last or run.stopped_by:
                break
    finally:
        progress.close()
        preemption.restore()
        if writer:
            writer.close()
    return trainer.write_summary(run, report, time.perf_counter() - start_time)
