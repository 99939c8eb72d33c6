"""Orbax checkpoints: the latest ones (for resuming) and the best k by a validation metric.

Layout: `<workdir>/checkpoints/latest/<step>/` and `<workdir>/checkpoints/best/<step>/`, each
with two items: `state` (params, optimizer state, step, rng; tensorstore arrays, no pickle) and
`meta` (JSON: data position, model fingerprint, validation metrics). Orbax writes a new
checkpoint to a temporary directory and renames it when complete, and only then removes old
ones, so a crash never leaves the workdir without its last good checkpoint.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax writes `<step>.orbax-checkpoint-tmp*` first


class CheckpointMismatchError(ValueError):
    """The workdir holds checkpoints of another model or head layout."""


def _manager(directory: Path, keep: int, metric: str | None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        best_fn=(lambda m: m[metric]) if metric else None,
        best_mode="max",
        enable_async_checkpointing=False,
        create=True,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


class Checkpoints:
    """The two managers of a workdir. `metric` names the validation metric of "best"."""

    def __init__(self, workdir: str | Path, *, keep_best: int, metric: str):
        root = Path(workdir).resolve() / "checkpoints"
        self.metric = metric
        self.latest = _manager(root / "latest", keep=2, metric=None)
        self.best = _manager(root / "best", keep=keep_best, metric=metric)

    def save(self, step: int, state, meta: dict, *, val_metrics: dict | None = None) -> None:
        """Saves `state` (host pytree) as latest and, when validated, as a best candidate."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if step not in self.latest.all_steps():
            self.latest.save(step, args=args)
        if val_metrics is not None and step not in self.best.all_steps():
            self.best.save(step, args=args, metrics={self.metric: val_metrics[self.metric]})
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def _resolve(self, which: str | int) -> tuple[ocp.CheckpointManager, list[int]]:
        """Candidate steps, newest or best first, for "latest", "best" or a step number."""
        if which == "latest":
            return self.latest, sorted(self.latest.all_steps(), reverse=True)
        if which == "best":
            best = self.best.best_step()
            return self.best, [] if best is None else [best]
        step = int(which)
        for manager in (self.latest, self.best):
            if step in manager.all_steps():
                return manager, [step]
        available = sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))
        raise FileNotFoundError(f"no checkpoint at step {step}; available: {available}")

    def remove_unfinished(self) -> list[Path]:
        """Deletes the `<step>.orbax-checkpoint-tmp*` folders of saves that a crash cut short
        (never listed as checkpoints). Only for the process that writes this workdir: a
        reader (eval) must not delete a save in progress."""
        removed = []
        for manager in (self.latest, self.best):
            for path in Path(manager.directory).glob(f"*{TMP_SUFFIX}*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if removed:
            log.warning("removed unfinished checkpoint saves: %s", [p.name for p in removed])
        return removed

    def has_any(self) -> bool:
        return bool(self.latest.all_steps() or self.best.all_steps())

    def read_meta(self, which: str | int = "latest") -> dict | None:
        manager, steps = self._resolve(which)
        for step in steps:
            try:
                return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                    "meta"
                ]
            except Exception as err:  # noqa: BLE001 - report and fall back to an older one
                log.warning("checkpoint %s/%d has unreadable metadata: %s", which, step, err)
        return None

    def read_arrays(self, which: str | int = "latest") -> tuple[int, dict]:
        """(step, state as a tree of numpy arrays) of a checkpoint, without a target structure
        or a model (for comparing workdirs, see scripts/resume_check.py)."""
        manager, steps = self._resolve(which)
        if not steps:
            raise FileNotFoundError(f"no checkpoint ({which}) in {manager.directory}")
        restored = manager.restore(
            steps[0], args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
        return steps[0], jax.tree_util.tree_map(np.asarray, restored["state"])

    def quarantine(self, manager: ocp.CheckpointManager, step: int) -> Path:
        """Moves an unusable checkpoint aside to `<step>.corrupt[-n]` (kept for inspection,
        no longer listed), so that a new checkpoint of the same step can be written."""
        source = Path(manager.directory) / str(step)
        target = source.with_name(f"{step}.corrupt")
        n = 1
        while target.exists():
            target, n = source.with_name(f"{step}.corrupt-{n}"), n + 1
        source.rename(target)
        manager.reload()
        log.error("moved the unusable checkpoint %s to %s", source, target)
        return target

    def restore(
        self, which: str | int, target, fingerprint: dict | None = None, quarantine: bool = False
    ):
        """Restores (state, meta) into the structure of `target` (a host pytree).

        Tries candidates newest first: a corrupt or half-written checkpoint is reported and
        the previous good one is used (with `quarantine`, the bad newer ones are then moved
        aside, so that training can write those steps again). When none restores, raises
        FileNotFoundError listing each problem and moves nothing. Refuses checkpoints of
        another model layout.
        """
        manager, steps = self._resolve(which)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        problems, bad = [], []
        for step in steps:
            try:
                meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                    "meta"
                ]
            except Exception as err:  # noqa: BLE001
                problems.append(f"step {step}: unreadable metadata ({type(err).__name__}: {err})")
                log.error(
                    "checkpoint %s/%d has unreadable metadata, trying an older one: %s",
                    manager.directory,
                    step,
                    err,
                )
                bad.append(step)
                continue
            if fingerprint is not None and meta.get("model") != fingerprint:
                raise CheckpointMismatchError(
                    f"{manager.directory}/{step} holds a checkpoint of another model or head "
                    f"layout.\n  checkpoint: {meta.get('model')}\n  this run:   {fingerprint}\n"
                    "Use a new --workdir, or the config that wrote this one."
                )
            try:
                restored = manager.restore(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)),
                )
            except Exception as err:  # noqa: BLE001
                problems.append(f"step {step}: corrupt state ({type(err).__name__}: {err})")
                log.error(
                    "checkpoint %s/%d is corrupt, trying an older one: %s",
                    manager.directory,
                    step,
                    err,
                )
                bad.append(step)
                continue
            if problems:
                log.warning(
                    "restored %s/%d; skipped newer unusable checkpoints: %s",
                    manager.directory,
                    step,
                    "; ".join(problems),
                )
            # Only now that an older checkpoint restored (so the newer ones, not this code or
            # target, are at fault) are the bad ones moved aside.
            for bad_step in bad if quarantine else ():
                self.quarantine(manager, bad_step)
            return restored["state"], meta
        raise FileNotFoundError(
            f"no usable checkpoint ({which}) in {manager.directory}"
            + (": " + "; ".join(problems) if problems else "")
        )
