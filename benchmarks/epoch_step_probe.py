"""The epoch's own train step: compile time and step time at its packed shapes, per precision.

    python benchmarks/epoch_step_probe.py [--rows 12] [--lengths 64,128] [--steps 8] [--json PATH]
    XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=dot python benchmarks/epoch_step_probe.py

`benchmarks/epoch.py` trains on packed rows (configs/emotion_minilm.py: rows of 64 tokens, about
12 rows per update of 32 texts, and a few rows of 128 for the longest texts), not on the B=32,
L=64 batch of `throughput.py`. This times the project's jitted, donated train step on exactly
those shapes (4 texts per row), for model.matmul_dtype float32 and bfloat16: the seconds to
trace and compile each shape (what the epoch pays once per shape) and the median step. XLA flags
apply per process: run once per flag set and compare.
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
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
