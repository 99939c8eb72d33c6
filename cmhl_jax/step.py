"""Optimizer, the pure train step, and its data-parallel wrappers (pmap and jit + mesh).

`train_step(state, batch)` is a pure function over pytrees. Data parallelism:

* `pmap` (the design's choice): the state is replicated with a leading device axis, each
  device gets [B / n] rows, gradients are averaged with `lax.pmean`.
* `mesh`: `jax.jit` over a 1-D device mesh; the state is replicated, the batch is sharded
  along its rows with a NamedSharding, and XLA inserts the reduction.

Both give the same update as one device with the same global batch: the loss of a device is
its sum over texts divided by the global text count (at least one) over the number of devices,
so that the mean over devices of the gradients is the gradient of the global mean.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cmhl_jax.data import device_split
from cmhl_jax.model import ModelDef, forward
from cmhl_jax.runtime import release_free_memory

AXIS = "data"


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32: train batches consumed (micro-steps when accumulating)
    params: dict
    opt_state: optax.OptState
    rng: jax.Array  # uint32[2] base key; step keys are fold_in(rng, step)


def learning_rate_schedule(optim_cfg, total_updates: int) -> optax.Schedule:
    """Linear warmup to lr over `warmup_steps` updates (when set) or `warmup_frac` of the
    updates, then linear decay to 0."""
    warmup = optim_cfg.get("warmup_steps") or int(round(optim_cfg.warmup_frac * total_updates))
    warmup = max(1, min(warmup, total_updates))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, optim_cfg.lr, warmup),
            optax.linear_schedule(optim_cfg.lr, 0.0, max(total_updates - warmup, 1)),
        ],
        [warmup],
    )


def weight_decay_mask(params) -> dict:
    """Decay matrices and embeddings only: no decay on biases and LayerNorm (all 1-D)."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg, total_updates: int):
    """AdamW with warmup + linear decay, optional clipping, gradient accumulation.

    Returns (tx, schedule); the schedule counts optimizer updates, not micro-steps.
    """
    schedule = learning_rate_schedule(optim_cfg, total_updates)
    parts = []
    if optim_cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
    parts.append(
        optax.adamw(
            schedule,
            b1=optim_cfg.b1,
            b2=optim_cfg.b2,
            eps=optim_cfg.eps,
            weight_decay=optim_cfg.weight_decay,
            mask=weight_decay_mask,
        )
    )
    tx = optax.chain(*parts)
    if optim_cfg.accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=optim_cfg.accum_steps)
    return tx, schedule


def init_train_state(params, tx, seed: int) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed),
    )


def guarded_update(tx, params, opt_state, grads, loss):
    """The optimizer update behind a NaN guard: a step whose loss or gradients are not finite
    leaves params and optimizer state unchanged (the loop reads `nonfinite` and stops or counts
    it). Returns (params, opt_state, grad_norm, finite).

    The guard is a `lax.cond`, not a `where` over the new and old trees: selecting between the
    two keeps the old moments alive next to the donated buffers the new ones are written into,
    so XLA copies every Adam moment on every step (the cost is measured in docs/benchmarks.md).
    A finite step is optax's
    update unchanged (tests/test_reliability.py checks it bitwise)."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, opt_state = jax.lax.cond(
        finite, update, lambda params, opt_state: (params, opt_state), params, opt_state
    )
    return params, opt_state, grad_norm, finite


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model_def: ModelDef,
    tx,
    schedule: Callable,
    accum_steps: int,
    axis_name: str | None = None,
):
    """One micro-step: forward in train mode, the task's loss, gradients, AdamW update."""
    rng = jax.random.fold_in(state.rng, state.step)
    weights = batch["text_mask"]
    count = weights.sum()
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        # each device divides by global count / devices, so that the pmean of the gradients
        # below divides by the global count; clamped to one text before the split, as without
        # devices (clamping the per-device share would shrink a batch of fewer texts than devices)
        devices = jax.lax.psum(1, axis_name)
        normalizer = jnp.maximum(jax.lax.psum(count, axis_name), 1.0) / devices
    else:
        normalizer = jnp.maximum(count, 1.0)

    def loss_fn(params):
        outputs = forward(model_def, params, batch, rng)
        return model_def.task.loss(outputs, params["heads"], batch["labels"], weights, normalizer)

    grads, terms = jax.grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        terms = jax.lax.pmean(terms, axis_name)
        count = jax.lax.psum(count, axis_name)
    params, opt_state, grad_norm, finite = guarded_update(
        tx, state.params, state.opt_state, grads, terms["loss"]
    )
    metrics = dict(
        terms,
        nonfinite=1.0 - finite.astype(jnp.float32),
        grad_norm=grad_norm,
        lr=schedule(state.step // accum_steps),
        texts=count,
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def predict_step(params, batch, *, model_def: ModelDef):
    """Probabilities of every head (and gate weights), eval mode."""
    return model_def.task.probabilities(forward(model_def, params, batch))


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

    def put_state(self, state):
        """Host (unreplicated) state → device state for this mode."""
        if self.mode == "pmap":
            return self._replicate(state)
        return jax.device_put(state, self.replicated)

    def put_params(self, params):
        """Host params → device params for `predict`."""
        if self.mode == "pmap":
            return self._replicate(params)
        return jax.device_put(params, self.replicated)

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
