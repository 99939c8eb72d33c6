"""The JAX train step (MiniLM, B=32, L=64) under each malloc: texts/s per allocator.

    python benchmarks/alloc_probe.py [--variants glibc,glibc_tuned,jemalloc,mimalloc]
        [--rounds 2] [--steps 8] [--json PATH]

An allocator is chosen when a process starts, so each variant is a child process; the children
run in turn, round after round (ABCD ABCD), so load changes hit them alike. Variants:
* glibc: the default allocator (what a fresh `pip install` gets without libjemalloc2);
* glibc_tuned: glibc with mallopt (in-process, before jax starts): no trimming, no mmap for
  blocks up to the 32 MiB maximum, so freed step buffers stay in the heap;
* jemalloc: the system libjemalloc.so.2 with the fast runtime's MALLOC_CONF (no decay);
* mimalloc: libmimalloc.so from the `cmeel-mimalloc` wheel on PyPI (--mimalloc PATH, or found
  in the installed wheel), MIMALLOC_PURGE_DELAY=-1 (freed pages never returned).
Every child sets the fast runtime's XLA flags and synchronous dispatch itself (the fast
runtime's re-execution is off: CMHL_FAST_RUNTIME=0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np

VARIANTS = ("glibc", "glibc_tuned", "jemalloc", "mimalloc")


def find_mimalloc() -> str | None:
    for base in map(Path, sys.path):
        candidate = base / "cmeel.prefix" / "lib" / "libmimalloc.so"
        if candidate.exists():
            return str(candidate)
    return None


def glibc_tune() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 2**20)  # the maximum on 64-bit glibc
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def child(args) -> None:
    if args.child == "glibc_tuned":
        glibc_tune()
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    path = common.model_dir("minilm")
    cfg = common.read_hf_config(path)
    config = common.jax_config(path)
    state, step, _, _, _ = common.jax_setup(config)
    batch = jax.device_put(common.fixed_batch(cfg, 32, 64))
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    first = time.perf_counter() - t
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    print(json.dumps({"first_step_s": first, "step_s": times, "peak_rss_mb": common.peak_rss_mb()}))


def env_for(variant: str, mimalloc: str | None) -> dict:
    from cmhl_jax.runtime import MALLOC_CONF, XLA_CPU_FLAGS, find_jemalloc

    env = dict(os.environ, CMHL_FAST_RUNTIME="0", XLA_FLAGS=" ".join(XLA_CPU_FLAGS))
    env.pop("LD_PRELOAD", None)
    env.pop("MALLOC_CONF", None)
    if variant == "jemalloc":
        env.update(LD_PRELOAD=find_jemalloc() or "", MALLOC_CONF=MALLOC_CONF)
    elif variant == "mimalloc":
        env.update(LD_PRELOAD=mimalloc or "", MIMALLOC_PURGE_DELAY="-1")
    return env


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mimalloc", default="")
    p.add_argument("--child", default="")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    mimalloc = args.mimalloc or find_mimalloc()
    names = [v for v in args.variants.split(",") if v]
    if "mimalloc" in names and not mimalloc:
        sys.exit("mimalloc: pip install cmeel-mimalloc, or pass --mimalloc PATH")
    runs = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            cmd = [sys.executable, __file__, "--child", n, "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]  # fmt: skip
            env = env_for(n, mimalloc)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)  # noqa: S603
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(n, f"{32 / np.median(runs[n][-1]['step_s']):.1f} texts/s", flush=True)
    result = {
        "meta": {**common.machine_info(), "command": " ".join(["python", *sys.argv]),
                 "mimalloc": mimalloc, "loadavg_1m_at_end": os.getloadavg()[0]},
    }  # fmt: skip
    for n in names:
        steps = [s for r in runs[n] for s in r["step_s"]]
        result[n] = {
            "texts_per_s": 32 / float(np.median(steps)),
            "step_ms": common.summary([1e3 * s for s in steps]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[n]),
            "first_step_s": float(np.median([r["first_step_s"] for r in runs[n]])),
        }
    base = result.get("jemalloc", {}).get("texts_per_s")
    if base:
        result["ratios_over_jemalloc"] = {n: result[n]["texts_per_s"] / base for n in names}
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
