"""The optimizer and the pure train and predict steps.

`train_step(state, batch)` is a pure function over pytrees; `cmhl_jax.parallel.Parallel` runs
it on one device or data-parallel (pmap, or jit over a device mesh). With `axis_name` (pmap)
the loss of a device is its sum over texts divided by the global text count (at least one)
over the number of devices, so that the mean over devices of the gradients is the gradient of
the global mean: the same update as one device with the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax

from cmhl_jax.model import ModelDef, forward


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
