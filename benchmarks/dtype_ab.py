"""JAX train step in float32 vs bfloat16 (`config.model.dtype`), interleaved in one process.

    python benchmarks/dtype_ab.py [--model minilm] [--batch 32] [--seq 64] [--steps 10]

Both steps train their own copy of the model on the same fixed batch (dropout on), one step
each in turn, so load changes hit both alike. Prints the median step time of each, the ratio,
and each copy's loss at the start and the end (the bf16 loss must fall as the fp32 one does).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import common
import numpy as np

from cmhl_jax.runtime import ensure_fast_runtime


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    ensure_fast_runtime()
    import jax

    path = common.model_dir(args.model)
    cfg = common.read_hf_config(path)
    batch = jax.device_put(common.fixed_batch(cfg, args.batch, args.seq))
    runs = {}
    for dt in args.dtypes.split(","):
        config = common.jax_config(path, dt)
        state, step, _, _, _ = common.jax_setup(config, total_updates=10 * args.steps)
        t = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        runs[dt] = {"state": state, "step": step, "times": [], "losses": [float(m["loss"])],
                    "first_step_s": time.perf_counter() - t}  # fmt: skip
    for i in range(args.steps + 2):
        for r in runs.values():
            t = time.perf_counter()
            r["state"], m = r["step"](r["state"], batch)
            jax.block_until_ready(m)
            if i >= 2:
                r["times"].append(time.perf_counter() - t)
            r["losses"].append(float(m["loss"]))
    flops = common.model_flops(cfg, args.batch, args.seq, train=True)
    result = {"meta": {**common.machine_info(), "command": " ".join(["python", *sys.argv]),
                       "loadavg_1m_at_end": os.getloadavg()[0]}}  # fmt: skip
    for dt, r in runs.items():
        med = float(np.median(r["times"]))
        result[dt] = {
            "step_ms": common.summary([1e3 * x for x in r["times"]]),
            "samples_per_s": args.batch / med,
            "model_gflops": flops / med / 1e9,
            "first_step_s": r["first_step_s"],
            "loss_first": r["losses"][0],
            "loss_last": r["losses"][-1],
        }
    names = list(runs)
    if len(names) == 2:
        a, b = names
        result[f"speedup_{b}_over_{a}"] = result[b]["samples_per_s"] / result[a]["samples_per_s"]
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
