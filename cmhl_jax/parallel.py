"""Device placement and the data-parallel step: `Parallel` runs the train and predict steps
(`cmhl_jax.step`) on one device or over all of them.

* `pmap` (the design's choice): the state is replicated with a leading device axis, each
  device gets [B / n] rows, gradients are averaged with `lax.pmean`.
* `mesh`: `jax.jit` over a 1-D device mesh; the state is replicated, the batch is sharded
  along its rows with a NamedSharding, and XLA inserts the reduction.
* `single`: `jax.jit` on the first device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cmhl_jax.data import device_split
from cmhl_jax.runtime import release_free_memory

AXIS = "data"


class Parallel:
    """Places state and batches on devices and runs the jitted/pmapped step for one mode.

    mode (checked by the config validation): "pmap" (replicated state with a device axis),
    "mesh" (jit + NamedSharding) or "single" (jit on the first device). Counts compilations
    (one per distinct batch shape).
    """

    def __init__(
        self, mode: str, step_fn: Callable | None = None, predict_fn: Callable | None = None
    ):
        self.mode = mode
        self.devices = jax.local_devices() if mode != "single" else jax.local_devices()[:1]
        self.num_devices = len(self.devices)
        self.num_global_devices = jax.device_count() if mode != "single" else 1
        self.shapes_seen: set = set()
        if mode == "pmap":
            if step_fn is not None:
                self._step = jax.pmap(
                    functools.partial(step_fn, axis_name=AXIS),
                    axis_name=AXIS,
                    donate_argnums=(0,),
                )
            if predict_fn is not None:
                self._predict = jax.pmap(predict_fn, axis_name=AXIS)
        else:
            devices = jax.devices() if mode == "mesh" else self.devices
            self.mesh = jax.sharding.Mesh(
                np.array(devices), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
            )
            self.replicated = NamedSharding(self.mesh, P())
            self.rows = NamedSharding(self.mesh, P(AXIS))
            if step_fn is not None:
                self._step = jax.jit(step_fn, donate_argnums=(0,))
            if predict_fn is not None:
                self._predict = jax.jit(predict_fn)

    @property
    def compiles(self) -> int:
        return len(self.shapes_seen)

    def put(self, tree):
        """A host (unreplicated) pytree → device arrays replicated as this mode lays them out:
        the train state for `step`, or the params for `predict`."""
        if self.mode == "pmap":
            return self._replicate(tree)
        return jax.device_put(tree, self.replicated)

    def _replicate(self, tree):
        """One copy per local device, stacked on a leading axis (pmap's layout)."""
        n = self.num_devices
        stacked = NamedSharding(jax.sharding.Mesh(np.array(self.devices), (AXIS,)), P(AXIS))

        def put(x):
            x = np.asarray(x)
            return jax.device_put(np.broadcast_to(x[None], (n, *x.shape)), stacked)

        return jax.tree_util.tree_map(put, tree)

    def get_state(self, state):
        """Device state → one host copy (numpy), e.g. for checkpoints and export."""
        if self.mode == "pmap":
            state = jax.tree_util.tree_map(lambda x: x[0], state)
        return jax.device_get(state)

    def put_batch(self, batch: dict) -> dict:
        """This process's rows of a global batch → device arrays."""
        if self.mode == "pmap":
            return device_split(batch, self.num_devices)
        if jax.process_count() > 1:
            return {
                k: jax.make_array_from_process_local_data(self.rows, v) for k, v in batch.items()
            }
        return jax.device_put(batch, self.rows)

    def _first_of_shape(self, kind: str, batch: dict) -> bool:
        key = (kind, *batch["input_ids"].shape)
        new = key not in self.shapes_seen
        self.shapes_seen.add(key)
        return new

    def step(self, state, batch: dict):
        """One train step; the metrics are scalars in every mode (pmap's copies, equal after
        the all-reduce, are reduced to the first device's)."""
        compiling = self._first_of_shape("train", batch)
        state, metrics = self._step(state, self.put_batch(batch))
        if compiling:  # compiled synchronously above; the step itself may still run
            release_free_memory()
        if self.mode == "pmap":
            metrics = {k: v[0] for k, v in metrics.items()}
        return state, metrics

    def predict(self, params, batch: dict) -> dict:
        """Probabilities of this process's rows, gathered over processes: numpy [rows, R, C]."""
        compiling = self._first_of_shape("predict", batch)
        probs = self._predict(params, self.put_batch(batch))
        if compiling:
            release_free_memory()
        if self.mode == "pmap":
            probs = {k: v.reshape(-1, *v.shape[2:]) for k, v in probs.items()}
        if jax.process_count() > 1:
            probs = multihost_utils.process_allgather(probs, tiled=True)
        return {k: np.asarray(v) for k, v in probs.items()}
