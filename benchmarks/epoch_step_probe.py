"""The epoch's own train step: compile time and step time at its packed shapes, per precision.

    python benchmarks/epoch_step_probe.py [--rows 12] [--lengths 64,128] [--steps 8] [--json PATH]
    XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=dot python benchmarks/epoch_step_probe.py

`benchmarks/epoch.py` trains on packed rows (configs/emotion_minilm.py: rows of 64 tokens, about
12 rows per update of 32 texts, and a few rows of 128 for the longest texts), not on the B=32,
L=64 batch of `throughput.py`. This times the project's jitted, donated train step on exactly
those shapes (4 texts per row), for model.matmul_dtype float32 and bfloat16: the seconds to
trace and compile each shape (what the epoch pays once per shape) and the median step. It also
times the step's optimizer part alone (`cmhl_jax.step.guarded_update`: global grad norm, AdamW
with its weight-decay mask and schedule, the NaN guard; jitted, state donated) on the model's
real parameter shapes, and AdamW without norm and guard, to show what the update costs per step
whatever the batch. XLA flags apply per process: run once per flag set and compare.
"""

from __future__ import annotations

import argparse
import sys
import time

import common
import numpy as np

from cmhl_jax.runtime import ensure_fast_runtime


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--lengths", default="64,128")
    p.add_argument("--texts-per-row", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    ensure_fast_runtime()
    import jax

    path = common.model_dir("minilm")
    hf_cfg = common.read_hf_config(path)
    result = {"meta": {**common.machine_info(), "command": " ".join(["python", *sys.argv])}}
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
            t = time.perf_counter()
            lowered = step.lower(state, batch)
            traced = time.perf_counter()
            compiled = lowered.compile()
            done = time.perf_counter()
            times = []
            for _ in range(args.steps + 1):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t0)
            result[f"{precision}_L{length}"] = {
                "rows": args.rows,
                "trace_lower_s": traced - t,
                "compile_s": done - traced,
                "step_ms": common.summary([1e3 * x for x in times[1:]]),
            }
    result["optimizer_update"] = time_optimizer_update(state.params, config, args.steps)
    common.emit_json(result, args.json)


def time_optimizer_update(params, config, steps: int) -> dict:
    """Median ms of the step's optimizer part alone, with and without grad norm + NaN guard."""
    import jax
    import jax.numpy as jnp
    import optax

    from cmhl_jax.step import guarded_update, make_optimizer

    tx, _ = make_optimizer(config.optim, 500)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-3), params)

    def guarded(params, opt_state):
        return guarded_update(tx, params, opt_state, grads, jnp.float32(0.0))[:2]

    def adamw_only(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    out = {"params": int(sum(p.size for p in jax.tree_util.tree_leaves(params)))}
    for name, fn in (("guarded_update_ms", guarded), ("adamw_only_ms", adamw_only)):
        fn = jax.jit(fn, donate_argnums=(0, 1))
        state = (jax.tree_util.tree_map(jnp.copy, params), tx.init(params))
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            state = jax.block_until_ready(fn(*state))
            times.append(1e3 * (time.perf_counter() - t0))
        out[name] = common.summary(times[1:])
    return out


if __name__ == "__main__":
    main()
