"""Orbax checkpoints: the latest ones (for resuming) and the best k by a validation metric.

Layout: `<workdir>/checkpoints/latest/<step>/` and `<workdir>/checkpoints/best/<step>/`, each
with two items: `state` (params, optimizer state, step, rng; tensorstore arrays, no pickle) and
`meta` (JSON: data position, model fingerprint, validation metrics). Orbax writes a new
checkpoint to a temporary directory and renames it when complete, and only then removes old
ones, so a crash never leaves the workdir without its last good checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cmhl_jax.errors import UserError
from cmhl_jax.paths import workdir_path

log = logging.getLogger(__name__)
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax writes `<step>.orbax-checkpoint-tmp*` first


class CheckpointModelMismatchError(UserError, ValueError):
    """This checkpoint does not match the workdir's model (another model or head layout)."""


class CheckpointSaveError(UserError, OSError):
    """A save failed (full disk, I/O error); the previous checkpoints are intact and the
    partial save was removed. The message is one line: step, workdir, cause."""


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError that caused `err` (itself, or along its __cause__/__context__ chain: Orbax
    and tensorstore wrap the writer's error)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _looks_like_io_error(err: BaseException) -> bool:
    text = str(err)
    return any(
        marker in text
        for marker in ("No space left", "ENOSPC", "Disk quota", "Input/output error", "EIO")
    )


def _remove_tree(path: epath.Path) -> None:
    """Deletes a folder (local or remote), ignoring errors."""
    try:
        path.rmtree(missing_ok=True)
    except OSError as err:
        log.debug("could not remove %s: %s", path, err)


def _manager(directory: epath.Path, keep: int, metric: str | None) -> ocp.CheckpointManager:
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
        root = workdir_path(workdir) / "checkpoints"  # local or a URL (gs://...)
        self.root = root
        self.metric = metric
        self.latest = _manager(root / "latest", keep=2, metric=None)
        self.best = _manager(root / "best", keep=keep_best, metric=metric)

    def save(self, step: int, state, meta: dict, *, val_metrics: dict | None = None) -> None:
        """Saves `state` (host pytree) as latest and, when validated, as a best candidate.

        Synchronous (the managers are not async; `wait_until_finished` also surfaces a failed
        background commit here). A failure to write (full disk, I/O error) removes the
        partial `<step>.orbax-checkpoint-tmp*` folders, leaves every earlier checkpoint
        usable and raises `CheckpointSaveError`.
        """
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            if step not in self.latest.all_steps():
                self.latest.save(step, args=args)
            if val_metrics is not None and step not in self.best.all_steps():
                self.best.save(step, args=args, metrics={self.metric: val_metrics[self.metric]})
            self.latest.wait_until_finished()
            self.best.wait_until_finished()
        except Exception as err:
            self._discard_partial(step)
            cause = _os_error_in(err)
            if cause is None and not _looks_like_io_error(err):
                raise
            reason = f"{type(cause or err).__name__}: {cause or err}"
            raise CheckpointSaveError(
                f"checkpoint save at step {step} in {self.root.parent} failed ("
                + " ".join(reason.split())
                + "); the previous checkpoint is kept"
            ) from err

    def _discard_partial(self, step: int) -> None:
        """Removes this step's unfinished save folders (never listed as checkpoints)."""
        for manager in (self.latest, self.best):
            try:  # let writer threads of the failed save finish before deleting their folder
                manager.wait_until_finished()
            except Exception as err:  # noqa: BLE001 - the same failure, already being reported
                log.debug("failed save of step %d: %s", step, err)
            for _ in range(5):
                partial = list(epath.Path(manager.directory).glob(f"{step}{TMP_SUFFIX}*"))
                if not partial:
                    break
                for path in partial:
                    _remove_tree(path)
                time.sleep(0.1)
            try:
                manager.reload()
            except Exception as err:  # noqa: BLE001 - the error being reported matters more
                log.warning("could not reload %s after a failed save: %s", manager.directory, err)

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
            for path in epath.Path(manager.directory).glob(f"*{TMP_SUFFIX}*"):
                _remove_tree(path)
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
        source = epath.Path(manager.directory) / str(step)
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
                raise CheckpointModelMismatchError(
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
