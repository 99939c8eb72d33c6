"""Matmul speed per dtype: XLA:CPU (`jnp.dot`, jitted) and PyTorch (`torch.mm`), fp32 vs bf16.

    python benchmarks/matmul_probe.py --torch --rounds 10 \
        --json benchmarks/results/<cpu>/matmul_probe.json [--settle-ms MS]
    XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=dot python benchmarks/matmul_probe.py

Shapes: the 2048³ roof and the MiniLM train step's matmuls at B=32, L=64 (2048 tokens, H=384,
I=1536) and in the epoch's packed step (11 rows of 64: 704 tokens): each weight matmul's forward
shape and its weight gradient's (dW = x^T dy; the input gradient dx = dy W^T has the forward
shape of the layer's mirror image). `matmul_floor_ms` adds them up for one train step of MiniLM
at each token count, per framework and dtype: 6 layers of 4 projections and the feed-forward
pair, each forward + dx + dW, but in the last layer only the key and value projections (the
heads read the first token only), and no attention score matmuls, LayerNorm, softmax, GELU,
dropout, embedding, loss or optimizer: a lower bound on the step time with these kernels.
bf16 inputs accumulate in
fp32 (`preferred_element_type=float32`), as a mixed-precision step would. All variants are timed
interleaved in one process (one call each per round, each after a pause of --settle-ms so that
the last call's spinning worker threads do not share the cores; 0 shows what they cost), so
machine load hits them alike: compare the ratios, and absolute numbers only from a quiet run.
XLA flags apply per process (read when the CPU backend starts): run once per flag set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import common
import numpy as np

HIDDEN, FFN, LAYERS = 384, 1536, 6  # MiniLM-L6


def _step_shapes(tokens: int) -> dict[str, tuple[int, int, int]]:
    """The weight matmuls of a MiniLM train step over `tokens` tokens: name -> (M, K, N), in
    the order `matmul_floor_ms` reads them."""
    t, h, i = tokens, HIDDEN, FFN
    return {
        f"ffn in [{t},{h}]x[{h},{i}]": (t, h, i),
        f"ffn out [{t},{i}]x[{i},{h}]": (t, i, h),
        f"proj [{t},{h}]x[{h},{h}]": (t, h, h),
        f"dW ffn in [{h},{t}]x[{t},{i}]": (h, t, i),
        f"dW ffn out [{i},{t}]x[{t},{h}]": (i, t, h),
        f"dW proj [{h},{t}]x[{t},{h}]": (h, t, h),
    }


STEP_TOKENS = (2048, 704)  # B=32 x L=64 (throughput.py); 11 x 64 (epoch.py's packed step)
SHAPES = {"roof 2048^3": (2048, 2048, 2048)}  # name: (M, K, N)
for _tokens in STEP_TOKENS:
    SHAPES.update(_step_shapes(_tokens))


def matmul_floor_ms(ms: dict[str, float], tokens: int) -> float:
    """Milliseconds of a MiniLM train step's weight matmuls, from each shape's median (module
    docstring): per full layer 4 projections and the feed-forward pair, forward + dx + dW."""
    ffn_in, ffn_out, proj, d_ffn_in, d_ffn_out, d_proj = (ms[n] for n in _step_shapes(tokens))
    full_layer = 2 * (4 * proj + ffn_in + ffn_out) + 4 * d_proj + d_ffn_in + d_ffn_out
    last_layer = 2 * (2 * proj) + 2 * d_proj  # key and value projections only
    return (LAYERS - 1) * full_layer + last_layer


def build_calls(with_torch: bool) -> dict:
    """(framework, dtype, shape) -> (fn, args, FLOPs) for every shape of SHAPES."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    fns = {}
    rng = np.random.default_rng(0)
    for name, (m, k, n) in SHAPES.items():
        a = rng.standard_normal((m, k), np.float32)
        b = rng.standard_normal((k, n), np.float32)
        for dt in ("float32", "bfloat16"):
            x, y = jnp.asarray(a, dt), jnp.asarray(b, dt)
            f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
            fns[("jax", dt, name)] = (f, (x, y), 2.0 * m * k * n)
        if with_torch:
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
            for dt, tdt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                x, y = torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)
                fns[("torch", dt, name)] = (torch.mm, (x, y), 2.0 * m * k * n)
    return fns


def _call(f, xs) -> None:
    out = f(*xs)
    if hasattr(out, "block_until_ready"):
        out.block_until_ready()


def time_calls(fns: dict, rounds: int, settle_ms: float) -> dict[tuple, list[float]]:
    """Two untimed calls each (compile, warm), then `rounds` interleaved rounds of one call
    each after a pause of `settle_ms`."""
    for f, xs, _ in fns.values():
        for _ in range(2):
            _call(f, xs)
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, (f, xs, _) in fns.items():
            time.sleep(settle_ms / 1e3)  # common.SETTLE_S
            t = time.perf_counter()
            _call(f, xs)
            times[key].append(time.perf_counter() - t)
    return times


def summarise(fns: dict, times: dict) -> tuple[list[dict], dict, dict]:
    """Rows (median ms, GFLOP/s per call), bf16 over fp32 speed-ups, and the train steps'
    matmul floors per framework, dtype and token count."""
    rows = []
    for key, (_, _, flops) in fns.items():
        med = float(np.median(times[key]))
        rows.append(
            {"framework": key[0], "dtype": key[1], "shape": key[2], "median_ms": 1e3 * med,
             "gflops": flops / med / 1e9}
        )  # fmt: skip
    by = {(r["framework"], r["dtype"], r["shape"]): r["gflops"] for r in rows}
    ratios = {
        f"{fw} bf16/fp32 {s}": by[(fw, "bfloat16", s)] / by[(fw, "float32", s)]
        for (fw, dt, s) in by
        if dt == "float32"
    }
    floors = {
        f"{fw} {dt} {tokens} tokens": matmul_floor_ms(
            {r["shape"]: r["median_ms"] for r in rows if (r["framework"], r["dtype"]) == (fw, dt)},
            tokens,
        )
        for fw, dt in sorted({(r["framework"], r["dtype"]) for r in rows})
        for tokens in STEP_TOKENS
    }
    return rows, ratios, floors


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--torch", action="store_true", help="also time torch.mm (fp32, bf16)")
    common.add_settle_argument(p)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    import jax

    fns = build_calls(args.torch)
    rows, ratios, floors = summarise(fns, time_calls(fns, args.rounds, args.settle_ms))
    result = {
        "meta": {
            **common.machine_info(),
            "command": " ".join(["python", *sys.argv]),
            "jax_version": jax.__version__,
            "rounds": args.rounds,
            "settle_ms": args.settle_ms,
            "loadavg_1m_at_end": os.getloadavg()[0],
        },
        "rows": rows,
        "speedup_bf16_over_fp32": ratios,
        "matmul_floor_ms": floors,
    }
    for r in rows:
        print(f"{r['framework']:6s} {r['dtype']:9s} {r['shape']:32s} {r['gflops']:8.1f} GFLOP/s")
    for k, v in ratios.items():
        print(f"{k:50s} {v:.2f}x")
    for k, v in floors.items():
        print(f"train step matmul floor, {k:32s} {v:8.1f} ms")
    common.emit_json(result, args.json) if args.json else None


if __name__ == "__main__":
    main()
