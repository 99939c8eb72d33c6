"""`train_and_evaluate(config, workdir)`: the training loop, in labelled sections.

setup → input → model → update step → checkpoint → loop (logging, evals, preemption).
"""

from __future__ import annotations

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
from cmhl_jax.checkpoint import Checkpoints
from cmhl_jax.config import ConfigError, to_json, validate_config
from cmhl_jax.evaluate import predict_all
from cmhl_jax.mental_health import EarlyStopping
from cmhl_jax.model import build_model
from cmhl_jax.step import Parallel, init_train_state, make_optimizer, predict_step, train_step
from cmhl_jax.tasks import make_task
from cmhl_jax.tensorboard import MetricsFile

log = logging.getLogger("cmhl_jax")


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN or inf; the message names the step and term."""


# ------------------------------------------------------------------------------------------
# Setup helpers


def setup_distributed(parallel_cfg) -> None:
    """`jax.distributed.initialize` for multi-host runs (CPU collectives through gloo)."""
    if not parallel_cfg.distributed:
        return
    if parallel_cfg.get("cpu_collectives"):
        jax.config.update("jax_cpu_collectives_implementation", parallel_cfg.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=parallel_cfg.coordinator_address or None,
        num_processes=parallel_cfg.num_processes,
        process_id=parallel_cfg.process_id,
    )


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
    free = shutil.disk_usage(workdir).free
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


def epoch_token_ids(config, epoch: int, train_examples, base_ids, tokenizer):
    """The training token ids of one epoch: augmented afresh each epoch when configured
    (training set only), else the cached tokenisation."""
    augment_cfg = config.get("augment")
    if augment_cfg is None or not (augment_cfg.synonym_p or augment_cfg.delete_p):
        return base_ids
    from cmhl_jax.augment import augment_texts, wordnet_synonyms

    synonyms = None
    if augment_cfg.synonym_p:
        synonyms = wordnet_synonyms(allow_missing=augment_cfg.allow_missing_wordnet)
    texts = augment_texts(
        train_examples.texts,
        config.seed,
        epoch,
        p_synonym=augment_cfg.synonym_p if synonyms else 0.0,
        p_delete=augment_cfg.delete_p,
        synonyms=synonyms,
    )
    return data_lib.tokenize(
        texts, tokenizer, config.data.max_length, truncation=config.data.truncation
    )


def check_finite(history: list[dict], first_step: int, skip: bool) -> int:
    """Non-finite steps among the logged ones; raises unless `skip` (the update of such a step
    was not applied, so the parameters are still the last good ones). Metrics of pmap mode
    carry a leading device axis (one equal value per local device), hence the `any`/`all`."""
    bad = [(first_step + i, h) for i, h in enumerate(history) if np.any(h["nonfinite"] > 0)]
    if bad and not skip:
        step, metrics = bad[0]
        terms = [k for k, v in metrics.items() if not np.all(np.isfinite(v))] or ["gradients"]
        terms.sort(key=lambda k: (k != "loss", k == "grad_norm", k))  # loss first
        raise NonFiniteLossError(
            f"non-finite loss at step {step} (terms: {', '.join(terms)}); its update was not "
            "applied and the last good checkpoint is kept. Lower the learning rate, set "
            "optim.grad_clip, or pass --config.skip_nonfinite=true to skip such steps."
        )
    return len(bad)


# ------------------------------------------------------------------------------------------
# Train and evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains on the train split, evaluates on val every epoch, keeps the best checkpoints.

    Returns the final summary (also written to <workdir>/summary.json).
    """
    # --- setup -------------------------------------------------------------------------
    validate_config(config)
    workdir = Path(workdir)
    check_workdir(workdir)  # unwritable: fail before loading anything
    setup_distributed(config.parallel)
    check_batch_sizes(config)
    is_main = jax.process_index() == 0
    task = make_task(config)

    # --- model -------------------------------------------------------------------------
    model_def, params, tokenizer = build_model(config.model, task, seed=config.seed)
    param_bytes = sum(x.size * 4 for x in jax.tree_util.tree_leaves(params))
    # Free space, before tokenisation and training: params + Adam moments, two copies.
    check_workdir(workdir, needed_bytes=2 * 3 * param_bytes)

    # --- input -------------------------------------------------------------------------
    data_cfg = config.data
    cache_dir = data_cfg.cache_dir or str(workdir / "cache")
    label_names = list(task.label_names)
    train_examples, val_examples = (
        data_lib.load_split(
            data_lib.split_spec(data_cfg, split),
            label_names,
            skip_bad_lines=data_cfg.skip_bad_lines,
        )
        for split in (data_cfg.train_split, data_cfg.val_split)
    )
    data_lib.warn_overlap(train_examples, val_examples)
    train_ids = data_lib.tokenize_split(train_examples, tokenizer, data_cfg, cache_dir)
    val_ids = data_lib.tokenize_split(val_examples, tokenizer, data_cfg, cache_dir)
    pad_id = int(tokenizer.pad_token_id)
    options = data_lib.batch_options(data_cfg)
    epoch_batches = [
        data_lib.num_train_batches(
            train_ids, batch_size=config.batch_size, seed=config.seed, epoch=e, **options
        )
        for e in range(config.num_epochs)
    ]
    total_steps = sum(epoch_batches)
    if config.max_steps > 0:
        total_steps = min(total_steps, config.max_steps)
    accum = int(config.optim.accum_steps)

    # --- update step -------------------------------------------------------------------
    tx, schedule = make_optimizer(config.optim, max(total_steps // accum, 1))
    step_fn = functools.partial(
        train_step, model_def=model_def, tx=tx, schedule=schedule, accum_steps=accum
    )
    parallel = Parallel(
        config.parallel.mode, step_fn, functools.partial(predict_step, model_def=model_def)
    )

    # --- checkpoint --------------------------------------------------------------------
    checkpoints = Checkpoints(
        workdir, keep_best=config.checkpoint.keep_best, metric=config.checkpoint.metric
    )
    host_state = init_train_state(params, tx, config.seed)
    position = {"epoch": 0, "batch": 0}
    best_metric, skipped_steps = None, 0
    early_cfg = early_stopping = None
    if task.name == "mental_health":
        early_cfg = config.mental_health.early_stopping
        early_stopping = EarlyStopping(early_cfg.patience)
    stopped_by = None
    if is_main:
        checkpoints.remove_unfinished()
    if checkpoints.has_any():
        host_state, meta = checkpoints.restore(
            "latest",
            jax.device_get(host_state),
            fingerprint=model_def.fingerprint(),
            quarantine=is_main,  # a corrupt newest one is moved aside, not overwritten later
        )
        position, best_metric = meta["position"], meta.get("best_metric")
        skipped_steps = meta.get("skipped_steps", 0)
        if early_stopping and meta.get("early_stopping"):
            early_stopping = EarlyStopping.from_state_dict(meta["early_stopping"])
        if meta.get("stopped_by") == "early_stopping":
            stopped_by = "early_stopping"  # finished: a restart does not train on
        log.info(
            "resumed from step %d (epoch %d, batch %d)",
            int(host_state.step),
            position["epoch"],
            position["batch"],
        )
    # Written only now: a run refused by the checkpoint checks above leaves the workdir's
    # config.json (which eval.py rebuilds the model from) untouched.
    if is_main:
        (workdir / "config.json").write_text(to_json(config))
    state = parallel.put_state(host_state)
    del host_state, params

    def save(step: int, val_report: dict | None = None):
        meta = {
            "position": position,
            "model": model_def.fingerprint(),
            "best_metric": best_metric,
            "skipped_steps": skipped_steps,
            "early_stopping": early_stopping.state_dict() if early_stopping else None,
            "stopped_by": stopped_by,
            "val": val_report and {k: v for k, v in val_report.items() if k != "per_class"},
        }
        checkpoints.save(step, parallel.get_state(state), meta, val_metrics=val_report)

    # --- loop --------------------------------------------------------------------------
    preemption = PreemptionFlag()
    metrics_file = MetricsFile(workdir / "metrics.jsonl", config) if is_main else None

    def log_record(record: dict) -> None:
        if metrics_file:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

    step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
    history: list[dict] = []  # per-step metrics (device arrays) since the last log record
    checked: list[dict] = []  # the first len(checked) of them, on the host, checked finite

    def check_history() -> list[dict]:
        """Fetches and checks the unchecked steps: a non-finite one raises (unless skipped)
        before anything is logged or saved after it."""
        nonlocal skipped_steps
        new = jax.device_get(history[len(checked) :])
        first = step - len(history) + len(checked) + 1
        skipped_steps += check_finite(new, first, config.skip_nonfinite)
        checked.extend(new)
        return checked

    texts_since, time_since, start_time = 0, time.perf_counter(), time.perf_counter()
    progress = tqdm(total=total_steps, initial=step, disable=not is_main, desc="train")
    val_report = None
    try:
        while step < total_steps and position["epoch"] < config.num_epochs and not stopped_by:
            if preemption.signal_name:  # received during the last eval or save
                stopped_by = preemption.signal_name
                break
            epoch = position["epoch"]
            ids = epoch_token_ids(config, epoch, train_examples, train_ids, tokenizer)
            batches_in_epoch = data_lib.num_train_batches(
                ids, batch_size=config.batch_size, seed=config.seed, epoch=epoch, **options
            )
            batches = data_lib.train_batches(
                ids,
                train_examples.labels,
                batch_size=config.batch_size,
                seed=config.seed,
                epoch=epoch,
                pad_id=pad_id,
                start_batch=position["batch"],
                **options,
            )
            for batch in batches:
                local = data_lib.shard_batch(batch, jax.process_count(), jax.process_index())
                state, metrics = parallel.step(state, local)
                history.append(metrics)
                texts_since += int(np.count_nonzero(batch["text_mask"]))
                step += 1
                position = {"epoch": epoch, "batch": position["batch"] + 1}
                progress.update(1)
                if step % config.log_every == 0 or step == total_steps:
                    # The only host syncs of the inner loop: here and at checkpoints.
                    values = list(check_history())
                    history.clear()
                    checked.clear()
                    now = time.perf_counter()
                    record = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
                    record.update(
                        step=step,
                        epoch=epoch,
                        samples_per_s=texts_since / (now - time_since),
                        compiles=parallel.compiles,
                        skipped_steps=skipped_steps,
                    )
                    texts_since, time_since = 0, now
                    progress.set_postfix(loss=f"{record['loss']:.4f}")
                    log_record(record)
                epoch_done = position["batch"] == batches_in_epoch
                if (
                    config.checkpoint.every_steps
                    and step % config.checkpoint.every_steps == 0
                    and not (epoch_done or step >= total_steps)  # saved after the eval
                ):
                    check_history()
                    save(step)
                if preemption.signal_name or step >= total_steps:
                    break
            if position["batch"] == batches_in_epoch:
                position = {"epoch": epoch + 1, "batch": 0}
            if preemption.signal_name and position["batch"] and step < total_steps:
                stopped_by = preemption.signal_name  # mid-epoch: save and stop now
                break
            # A signal at an epoch's end still gets that epoch's eval and checkpoint (a resumed
            # run does not redo them); the loop stops at the top of the next epoch.
            if position["batch"] == 0 or step >= total_steps:
                # --- evals (every epoch end, and at the end of a capped run) ------------
                probs = predict_all(
                    parallel,
                    state.params,
                    val_ids,
                    val_examples.labels,
                    batch_size=config.eval_batch_size,
                    pad_id=pad_id,
                    data_cfg=data_cfg,
                )
                val_report = task.report(probs, val_examples.labels)
                metric = val_report[config.checkpoint.metric]
                best_metric = metric if best_metric is None else max(best_metric, metric)
                log_record(
                    {
                        "step": step,
                        "epoch": epoch,
                        **{f"val_{k}": v for k, v in val_report.items() if isinstance(v, float)},
                    }
                )
                log.info(
                    "epoch %d step %d val %s=%.4f", epoch, step, config.checkpoint.metric, metric
                )
                if early_stopping and early_stopping.update(val_report[early_cfg.metric]):
                    stopped_by = "early_stopping"
                    log.info(
                        "early stopping: %d epochs without a better val %s",
                        early_stopping.bad_epochs,
                        early_cfg.metric,
                    )
                check_history()
                save(step, val_report)
    finally:
        progress.close()
        preemption.restore()
        if metrics_file:
            metrics_file.close()
    if stopped_by in ("SIGTERM", "SIGINT"):
        check_history()
        save(step)
        log.warning(
            "preempted by %s: saved a checkpoint at step %d (epoch %d, batch %d); rerun the "
            "same command to resume",
            stopped_by,
            step,
            position["epoch"],
            position["batch"],
        )
    summary = {
        "step": step,
        "stopped_by": stopped_by,
        "best_" + config.checkpoint.metric: best_metric,
        "skipped_steps": skipped_steps,
        "wall_time_s": time.perf_counter() - start_time,
        "compiles": parallel.compiles,
        "val": val_report and {k: v for k, v in val_report.items() if k != "per_class"},
    }
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
