"""The epoch's own train step: compile time and step time at its packed shapes, per precision.

    python benchmarks/epoch_step_probe.py [--rows 12] [--lengths 64,128] [--steps 8] [--json PATH]
        [--guard-ab] [--layers N]
    XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=dot python benchmarks/epoch_step_probe.py

`benchmarks/epoch.py` trains on packed rows (configs/emotion_minilm.py: rows of 64 tokens, about
12 rows per update of 32 texts, and a few rows of 128 for the longest texts), not on the B=32,
L=64 batch of `throughput.py`. This times the project's jitted, donated train step on exactly
those shapes (4 texts per row), for model.matmul_dtype float32 and bfloat16: the seconds to
trace and compile each shape (what the epoch pays once per shape) and the median step.

It also times the step's optimizer part alone on the model's real parameter shapes, jitted with
the state donated, interleaved: `cmhl_jax.step.guarded_update` (global grad norm, AdamW with its
weight-decay mask and schedule, the NaN guard as a `lax.cond`), the same with the guard as a
`where` between the new and old trees (the project's guard until 2026-12-01, kept here as the
reference), and AdamW alone. `--guard-ab` also times the whole train step with each guard,
interleaved step by step. XLA flags apply per process: run once per flag set and compare. The
persistent compilation cache is off here, so every run compiles.
`--layers N` takes a randomly initialised encoder of MiniLM's shapes with N layers instead of
MiniLM itself, to see how compile time grows with depth (what a scan over layers would save).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from unittest import mock

import common
import numpy as np

from cmhl_jax.runtime import ensure_fast_runtime


def where_guarded_update(tx, params, opt_state, grads, loss):
    """`cmhl_jax.step.guarded_update` with the NaN guard as a `where` over the new and old
    trees (same results; XLA copies every Adam moment before updating it in place)."""
    import jax
    import jax.numpy as jnp
    import optax

    grad_norm = optax.tree.norm(grads)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_params, new_opt_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old),
        (new_params, new_opt_state),
        (params, opt_state),
    )
    return new_params, new_opt_state, grad_norm, finite


def minilm_shaped(layers: int) -> str:
    """Register a random encoder with all-MiniLM-L6-v2's config but ``layers`` layers as a
    benchmark model (`common.model_dir` builds it once); its name."""
    name = f"minilm-shaped-{layers}-layers"
    cfg = common.read_hf_config(common.model_dir("minilm"))
    keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "architectures"}
    common.RANDOM_MODELS[name] = {**keep, "num_hidden_layers": layers}
    return name


def interleaved_ms(fns: dict, states: dict, steps: int) -> dict:
    """Median/min/max ms per variant; each round runs every variant once (the first round,
    warm-up, is dropped). `fns[name](state) -> state` with the state donated."""
    import jax

    times = {name: [] for name in fns}
    for _ in range(steps + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            states[name] = jax.block_until_ready(fn(states[name]))
            times[name].append(1e3 * (time.perf_counter() - t))
    return {name: common.summary(t[1:]) for name, t in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--lengths", default="64,128")
    p.add_argument("--texts-per-row", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--guard-ab", action="store_true", help="also the step with the where guard")
    p.add_argument("--layers", type=int, default=0, help="random MiniLM-shaped encoder, N layers")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    # compile times are what this measures: never load executables from the persistent cache
    os.environ["CMHL_COMPILATION_CACHE"] = "off"
    ensure_fast_runtime()
    import jax
    import jax.numpy as jnp

    from cmhl_jax import step as step_lib

    path = common.model_dir(minilm_shaped(args.layers) if args.layers else "minilm")
    hf_cfg = common.read_hf_config(path)
    result = {"meta": {**common.machine_info(), "command": " ".join(["python", *sys.argv])}}
    guards = {"cond": step_lib.guarded_update}
    if args.guard_ab:
        guards["where"] = where_guarded_update
    for precision in args.precisions.split(","):
        config = common.preset("emotion_minilm")
        config.optim.accum_steps = 1
        config.model.encoder = str(path)
        config.model.matmul_dtype = precision
        config.batch_size = args.rows
        state, step, _, _, _ = common.jax_setup(config, total_updates=500)
        for length in map(int, args.lengths.split(",")):
            batch = common.fixed_batch(hf_cfg, args.rows, length)
            shape = (args.rows, args.texts_per_row)
            batch.update(
                text_rows=np.zeros(shape, np.int32),
                labels=np.zeros(shape, np.int32),
                text_mask=np.ones(shape, np.float32),
            )
            batch = jax.device_put(batch)
            entry, fns, states = {"rows": args.rows}, {}, {}
            for name, guard in guards.items():
                with mock.patch.object(step_lib, "guarded_update", guard):
                    t = time.perf_counter()
                    # a new function per guard: jax caches traces per function, not per global
                    fresh = jax.jit(functools.partial(step.__wrapped__), donate_argnums=(0,))
                    lowered = fresh.lower(state, batch)
                    traced = time.perf_counter()
                    compiled = lowered.compile()
                    done = time.perf_counter()
                suffix = "" if name == "cond" else f"_{name}_guard"
                entry[f"trace_lower_s{suffix}"] = traced - t
                entry[f"compile_s{suffix}"] = done - traced
                fns[name] = lambda s, compiled=compiled, batch=batch: compiled(s, batch)[0]
                states[name] = jax.tree_util.tree_map(jnp.copy, state)
            timed = interleaved_ms(fns, states, args.steps)
            entry["step_ms"] = timed.pop("cond")
            if args.guard_ab:
                entry["step_ms_where_guard"] = timed.pop("where")
            result[f"{precision}_L{length}"] = entry
    result["optimizer_update"] = time_optimizer_update(state.params, config, args.steps)
    common.emit_json(result, args.json)


def time_optimizer_update(params, config, steps: int) -> dict:
    """Median ms of the step's optimizer part alone: the project's guard, the where guard, and
    AdamW without grad norm and guard."""
    import jax
    import jax.numpy as jnp
    import optax

    from cmhl_jax.step import guarded_update, make_optimizer

    tx, _ = make_optimizer(config.optim, 500)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    grads = jax.tree_util.tree_unflatten(
        treedef, [1e-3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )

    def with_guard(guard):
        def update(state, grads):
            return guard(tx, *state, grads, jnp.float32(0.0))[:2]

        return update

    def adamw_only(state, grads):
        updates, opt_state = tx.update(grads, state[1], state[0])
        return optax.apply_updates(state[0], updates), opt_state

    variants = {
        "guarded_update_ms": with_guard(guarded_update),
        "where_guard_ms": with_guard(where_guarded_update),
        "adamw_only_ms": adamw_only,
    }
    fns, states = {}, {}
    for name, fn in variants.items():
        jitted = jax.jit(fn, donate_argnums=(0,))
        fns[name] = lambda s, jitted=jitted: jitted(s, grads)
        states[name] = (jax.tree_util.tree_map(jnp.copy, params), tx.init(params))
    return {
        "params": int(sum(x.size for x in leaves)),
        **interleaved_ms(fns, states, steps),
    }


if __name__ == "__main__":
    main()
