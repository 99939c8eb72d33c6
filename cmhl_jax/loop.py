"""`train_and_evaluate(config, workdir)`: the training loop, in labelled sections.

input → model → update step → checkpoint → loop (logging, evals, preemption).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from cmhl_jax import data as data_lib
from cmhl_jax.affect import build_affect_tables
from cmhl_jax.checkpoint import Checkpoints
from cmhl_jax.config import to_json, validate_config
from cmhl_jax.evaluate import predict_all
from cmhl_jax.losses import loss_tables
from cmhl_jax.metrics import emotion_report
from cmhl_jax.model import build_model
from cmhl_jax.step import (
    Parallel,
    init_train_state,
    make_optimizer,
    predict_step,
    train_step,
)

log = logging.getLogger("cmhl_jax")

# ------------------------------------------------------------------------------------------
# Workdir checks


def check_workdir(workdir: Path, needed_bytes: int) -> None:
    """Fails before training when the workdir is unwritable or the disk cannot hold a
    checkpoint (two copies exist while a new one is written)."""
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_probe"
    try:
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


class PreemptionFlag:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, saves, and exits cleanly."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _mean_metrics(history: list[dict]) -> dict:
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


# ------------------------------------------------------------------------------------------
# Train and evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains on the train split, evaluates on val every epoch, keeps the best checkpoints.

    Returns the final summary (also written to <workdir>/summary.json).
    """
    validate_config(config)
    workdir = Path(workdir)
    if config.parallel.distributed:
        jax.distributed.initialize(
            coordinator_address=config.parallel.coordinator_address or None,
            num_processes=config.parallel.num_processes,
            process_id=config.parallel.process_id,
        )
    is_main = jax.process_index() == 0
    tables = build_affect_tables(config.affect)
    label_names = list(tables.emotion_names)

    # --- model -------------------------------------------------------------------------
    head_sizes = {
        "emotion": len(tables.emotion_names),
        "valence": len(tables.valence_names),
        "intensity": len(tables.intensity_names),
    }
    model_def, params, tokenizer = build_model(config.model, head_sizes, seed=config.seed)
    param_bytes = sum(x.size * 4 for x in jax.tree_util.tree_leaves(params))
    check_workdir(workdir, needed_bytes=2 * 3 * param_bytes)  # params + Adam moments
    if is_main:
        (workdir / "config.json").write_text(to_json(config))

    # --- input -------------------------------------------------------------------------
    data_cfg = config.data
    cache_dir = data_cfg.cache_dir or str(workdir / "cache")
    train_examples = data_lib.load_split(
        data_lib.split_spec(data_cfg, data_cfg.train_split),
        label_names,
        skip_bad_lines=data_cfg.skip_bad_lines,
    )
    val_examples = data_lib.load_split(
        data_lib.split_spec(data_cfg, data_cfg.val_split),
        label_names,
        skip_bad_lines=data_cfg.skip_bad_lines,
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
    loss_arrays = {k: jnp.asarray(v) for k, v in loss_tables(tables).items()}
    step_fn = functools.partial(
        train_step,
        model_def=model_def,
        tx=tx,
        tables=loss_arrays,
        loss_cfg=ml_collections.FrozenConfigDict(config.loss),
        schedule=schedule,
        accum_steps=accum,
    )
    parallel = Parallel(
        config.parallel.mode, step_fn, functools.partial(predict_step, model_def=model_def)
    )
    if config.batch_size % (parallel.num_global_devices):
        raise ValueError(
            f"batch_size={config.batch_size} must divide by the {parallel.num_global_devices} "
            f"devices of parallel.mode={config.parallel.mode}"
        )

    # --- checkpoint --------------------------------------------------------------------
    checkpoints = Checkpoints(
        workdir, keep_best=config.checkpoint.keep_best, metric=config.checkpoint.metric
    )
    host_state = init_train_state(params, tx, config.seed)
    position = {"epoch": 0, "batch": 0}
    best_metric = None
    if checkpoints.has_any():
        host_state, meta = checkpoints.restore(
            "latest", jax.device_get(host_state), fingerprint=model_def.fingerprint()
        )
        position = meta["position"]
        best_metric = meta.get("best_metric")
        log.info(
            "resumed from step %d (epoch %d, batch %d)",
            int(host_state.step),
            position["epoch"],
            position["batch"],
        )
    state = parallel.put_state(host_state)
    del host_state, params

    def save(step: int, val_report: dict | None = None):
        meta = {
            "position": position,
            "model": model_def.fingerprint(),
            "best_metric": best_metric,
            "val": val_report and {k: v for k, v in val_report.items() if k != "per_class"},
        }
        checkpoints.save(step, parallel.get_state(state), meta, val_metrics=val_report)

    # --- loop --------------------------------------------------------------------------
    preemption = PreemptionFlag()
    metrics_file = (workdir / "metrics.jsonl").open("a") if is_main else None
    step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
    history: list[dict] = []
    texts_since, time_since = 0, time.perf_counter()
    start_time = time.perf_counter()
    progress = tqdm(total=total_steps, initial=step, disable=not is_main, desc="train")
    val_report = None
    stopped_by = None
    try:
        while step < total_steps and position["epoch"] < config.num_epochs:
            epoch = position["epoch"]
            batches = data_lib.train_batches(
                train_ids,
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
                texts_since += int(batch["text_mask"].sum())
                step += 1
                position = {"epoch": epoch, "batch": position["batch"] + 1}
                progress.update(1)
                if step % config.log_every == 0 or step == total_steps:
                    values = _mean_metrics(jax.device_get(history))
                    history.clear()
                    now = time.perf_counter()
                    values.update(
                        step=step,
                        epoch=epoch,
                        samples_per_s=texts_since / (now - time_since),
                        compiles=parallel.compiles,
                    )
                    texts_since, time_since = 0, now
                    progress.set_postfix(loss=f"{values['loss']:.4f}")
                    if metrics_file:
                        metrics_file.write(json.dumps(values) + "\n")
                        metrics_file.flush()
                if config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0:
                    save(step)
                if preemption.signal_name or step >= total_steps:
                    break
            else:
                position = {"epoch": epoch + 1, "batch": 0}
            if preemption.signal_name:
                stopped_by = preemption.signal_name
                break
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
                val_report = emotion_report(
                    probs,
                    val_examples.labels,
                    tables,
                    threshold=config.eval.contradiction_threshold,
                    bins=config.eval.ece_bins,
                )
                metric = val_report[config.checkpoint.metric]
                best_metric = metric if best_metric is None else max(best_metric, metric)
                if metrics_file:
                    metrics_file.write(
                        json.dumps(
                            {
                                "step": step,
                                "epoch": epoch,
                                **{
                                    f"val_{k}": v
                                    for k, v in val_report.items()
                                    if isinstance(v, float)
                                },
                            }
                        )
                        + "\n"
                    )
                    metrics_file.flush()
                log.info(
                    "epoch %d step %d val %s=%.4f", epoch, step, config.checkpoint.metric, metric
                )
                save(step, val_report)
    finally:
        progress.close()
        preemption.restore()
        if metrics_file:
            metrics_file.close()
    if stopped_by:
        save(step)
        log.warning("%s received: saved a checkpoint at step %d; rerun to resume", stopped_by, step)
    summary = {
        "step": step,
        "stopped_by": stopped_by,
        "best_" + config.checkpoint.metric: best_metric,
        "wall_time_s": time.perf_counter() - start_time,
        "compiles": parallel.compiles,
        "val": val_report and {k: v for k, v in val_report.items() if k != "per_class"},
    }
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
