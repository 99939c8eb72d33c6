"""Orbax checkpoints: the latest ones (for resuming) and the best k by a validation metric.

Layout: `<workdir>/checkpoints/latest/<step>/` and `<workdir>/checkpoints/best/<step>/`, each
with two items: `state` (params, optimizer state, step, rng; tensorstore arrays, no pickle) and
`meta` (JSON: data position, model fingerprint, validation metrics). Orbax writes a new
checkpoint to a temporary directory and renames it when complete, and only then removes old
ones, so a crash never leaves the workdir without its last good checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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

    def restore(self, which: str | int, target, fingerprint: dict | None = None):
        """Restores (state, meta) into the structure of `target` (a host pytree).

        Tries candidates newest first: a corrupt or half-written checkpoint is reported and
        the previous good one is used. Refuses checkpoints of another model layout.
        """
        manager, steps = self._resolve(which)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        problems = []
        for step in steps:
            try:
                meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                    "meta"
                ]
            except Exception as err:  # noqa: BLE001
                problems.append(f"step {step}: unreadable metadata ({err})")
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
                continue
            if problems:
                log.warning("skipped unusable checkpoints: %s", "; ".join(problems))
            return restored["state"], meta
        raise FileNotFoundError(
            f"no usable checkpoint ({which}) in {manager.directory}"
            + (": " + "; ".join(problems) if problems else "")
        )
