"""Where the JAX train step's time and memory go (per-phase timing + XLA memory analysis).

    python benchmarks/profile_step.py --model minilm --batch 32 --seq 64 \
        --json benchmarks/results/profile_minilm_b32_l64.json

Phases, each a separately jitted function on the same fixed batch, timed interleaved (median
of --steps rounds), so differences attribute the step's time:
  forward_eval (no dropout), forward_train (dropout), grad_eval (fwd+bwd, no dropout),
  grad_train (fwd+bwd with dropout), step (the real train step: grad_train + AdamW, donated).
Ops: a jax.profiler trace of --trace-steps real steps; XLA:CPU's per-op events are grouped by
what they do (`op_category`) and by the largest single ops (`top_ops`), with each op's shape
and JAX source op from the compiled HLO. Ops can overlap on the 2 threads, so shares are of
the sum of op times.
Memory: XLA's buffer assignment of the step (arguments, temporaries) and this process's RSS
after imports (jax), after loading the model, after compiling, after the first steps (jemalloc keeps
freed memory, so the peak is roughly the sum of the phases' high-water marks).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common

from cmhl_jax.runtime import ensure_fast_runtime, release_free_memory


def op_category(kind: str, op_name: str) -> str:
    """What an XLA:CPU op does, from its fusion kind and the JAX op that produced it."""
    if "dot_general" in op_name or kind in ("dot", "dot_general"):
        return "matmul (backward)" if "transpose(jvp" in op_name else "matmul (forward)"
    if "jvp" not in op_name:
        return "AdamW update, grad norm, NaN guard"
    if kind.startswith(("copy", "transpose")):
        return "copies and transposes"
    return "elementwise and reductions (LayerNorm, softmax, GELU, dropout, residuals)"


# Control-flow ops whose trace event spans the ops inside them (the NaN guard's `lax.cond`):
# counting them too would count the optimizer's ops twice.
CONTROL_FLOW_OPS = ("cond", "conditional", "while", "call")


def op_breakdown(compiled, state, batch, steps: int, top: int = 12) -> dict:
    """Op times per step from a profiler trace of `steps` executions of the compiled step."""
    import gzip
    import json
    import re
    import tempfile
    from collections import defaultdict

    import jax

    hlo = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(
            r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name="([^"]*)"', compiled.as_text(), re.M
        )
    }
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(steps):
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        trace = json.load(gzip.open(next(Path(tmp).rglob("perfetto_trace.json.gz"))))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    categories, ops = defaultdict(float), defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") != "X" or e["name"] not in hlo:
            continue
        shape, op_name = hlo[e["name"]]
        op_name = op_name.removeprefix("jit(train_step)/")
        kind = re.sub(r"\.\d+$", "", e["name"])
        if kind in CONTROL_FLOW_OPS:
            continue
        ms = e["dur"] / 1e3 / steps
        categories[op_category(kind, op_name)] += ms
        ops[(kind, shape, op_name)][0] += ms
        ops[(kind, shape, op_name)][1] += 1
    top_ops = sorted(ops.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "steps": steps,
        "sum_of_op_ms": sum(categories.values()),
        "op_category_ms": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
        "top_ops": [
            {"kind": k, "shape": sh, "jax_op": op, "ms": t, "count": c // steps}
            for (k, sh, op), (t, c) in top_ops
        ],
    }, state


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="minilm", choices=common.MODELS)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--trace-steps", type=int, default=3)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    ensure_fast_runtime()

    import jax
    import numpy as np

    from cmhl_jax.model import forward

    rss = {"after_imports": common.rss_mb()}
    path = common.model_dir(args.model)
    hf = common.read_hf_config(path)
    state, step, _, model_def, _ = common.jax_setup(common.jax_config(path))
    rss["after_model_load"] = common.rss_mb()
    batch = jax.device_put(common.fixed_batch(hf, args.batch, args.seq))
    compiled = step.lower(state, batch).compile()
    release_free_memory()  # as cmhl_jax.step.Parallel does after each compilation
    rss["after_step_compile"] = common.rss_mb()
    mem = compiled.memory_analysis()
    memory = {
        "argument_mb": mem.argument_size_in_bytes / 2**20,
        "output_mb": mem.output_size_in_bytes / 2**20,
        "alias_mb": mem.alias_size_in_bytes / 2**20,
        "temp_mb": mem.temp_size_in_bytes / 2**20,
    }
    for _ in range(2):
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
    rss["after_first_steps"] = common.rss_mb()
    rss["peak"] = common.peak_rss_mb()

    params = state.params
    key = jax.random.PRNGKey(1)

    def loss(params, rng):
        out = forward(model_def, params, batch, rng)
        return sum(v.astype("float32").sum() for v in jax.tree_util.tree_leaves(out))

    phases = {
        "forward_eval": jax.jit(lambda p: forward(model_def, p, batch)),
        "forward_train": jax.jit(lambda p: forward(model_def, p, batch, key)),
        "grad_eval": jax.jit(jax.grad(lambda p: loss(p, None))),
        "grad_train": jax.jit(jax.grad(lambda p: loss(p, key))),
    }
    for fn in phases.values():
        jax.block_until_ready(fn(params))
    times = {k: [] for k in [*phases, "step"]}
    holder = {"state": state}

    def run_step():
        holder["state"], m = compiled(holder["state"], batch)
        return m

    for _ in range(args.steps):
        for name in times:
            fn = run_step if name == "step" else (lambda f=phases[name]: f(holder["state"].params))
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    derived = {
        "backward_over_forward_eval": (ms["grad_eval"] - ms["forward_eval"]) / ms["forward_eval"],
        "dropout_ms_fwd_bwd": ms["grad_train"] - ms["grad_eval"],
        "dropout_share_of_step": (ms["grad_train"] - ms["grad_eval"]) / ms["step"],
        "optimizer_and_loss_ms": ms["step"] - ms["grad_train"],
        "forward_gflops_executed_eval": None,
    }
    ops, holder["state"] = op_breakdown(compiled, holder["state"], batch, args.trace_steps)
    cost = jax.jit(lambda p: forward(model_def, p, batch)).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    if cost and cost.get("flops"):
        derived["forward_gflops_executed_eval"] = cost["flops"] / ms["forward_eval"] / 1e6
    result = {
        "meta": {
            **common.machine_info(),
            "command": " ".join(["python", *sys.argv]),
            "model": args.model,
            "batch": args.batch,
            "seq": args.seq,
        },
        "median_ms": ms,
        "derived": derived,
        "ops": ops,
        "xla_memory": memory,
        "rss_mb": rss,
    }
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
