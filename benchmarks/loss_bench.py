"""The CMHL composite loss, forward + backward: matrix form vs per-pair Python loops.

    python benchmarks/loss_bench.py --batch 256 --json benchmarks/results/loss.json \
        [--step-json benchmarks/results/throughput_minilm_b32_l64.json]

Three implementations of the same total loss (CE_emotion + 0.5 CE_valence + 0.5 CE_intensity
+ 0.4 L_excl), each differentiated w.r.t. the three heads' logits:

* `matrix_jit`: the project's `cmhl_jax.losses.cmhl_loss` (all pairs as one masked C x C
  matrix), inside one `jax.jit` with its gradient;
* `loop_jit`: the exclusivity term as a Python loop over the (i in P, j in N) pairs, traced
  into one jitted function (XLA sees 6 small graphs instead of one matrix);
* `loop_eager`: the same loop run op by op (no jit), the naive way.

The share of a train step is the jitted matrix form's time divided by the median JAX train step
of a throughput result (`--step-json`; else a MiniLM B=32, L=64 step measured here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmhl_jax.affect import build_affect_tables, default_affect_config
from cmhl_jax.losses import cmhl_loss, loss_tables
from cmhl_jax.runtime import ensure_fast_runtime

ALPHA, BETA, LAM = 0.5, 0.5, 0.4


def tables():
    t = build_affect_tables(default_affect_config())
    return {k: jnp.asarray(v) for k, v in loss_tables(t).items()}


def matrix_loss(logits, labels, weights, tabs):
    return cmhl_loss(logits, labels, weights, tabs, ALPHA, BETA, LAM)[0]


def loop_loss(logits, labels, weights, tabs):
    """Same total, the exclusivity term as a Python loop over the (i, j) pairs."""
    n = weights.sum()

    def ce(x, y):
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(x, y) * weights) / n

    total = ce(logits["emotion"], labels)
    total += ALPHA * ce(logits["valence"], tabs["valence_label"][labels])
    total += BETA * ce(logits["intensity"], tabs["intensity_label"][labels])
    probs = jax.nn.softmax(logits["emotion"], axis=-1)
    mask, tau = np.asarray(tabs["pair_mask"]), tabs["tau"]
    pairs = [(i, j) for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j]]
    excl = 0.0
    for i, j in pairs:
        excl = excl + jax.nn.relu(probs[:, i] + probs[:, j] - tau[i, j])
    excl = jnp.sum(excl / len(pairs) * weights) / n
    return total + LAM * excl


def inputs(batch: int, seed: int = 0):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    logits = {
        "emotion": 2 * jax.random.normal(k1, (batch, 6)),
        "valence": jax.random.normal(k2, (batch, 3)),
        "intensity": jax.random.normal(k3, (batch, 2)),
    }
    labels = jax.random.randint(k4, (batch,), 0, 6)
    return logits, labels, jnp.ones((batch,), jnp.float32)


def bench(fn, args, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(batch: int, reps: int) -> dict:
    tabs = tables()
    logits, labels, weights = inputs(batch)

    def closed(loss):  # the tables are constants of the loss, as in the train step
        return jax.value_and_grad(lambda lg, lb, w: loss(lg, lb, w, tabs))

    grad = {
        "matrix_jit": jax.jit(closed(matrix_loss)),
        "loop_jit": jax.jit(closed(loop_loss)),
        "loop_eager": closed(loop_loss),
    }
    values = {k: fn(logits, labels, weights) for k, fn in grad.items()}
    ref_v, ref_g = values["matrix_jit"]
    agree = {
        k: {
            "loss_abs_diff": float(abs(v - ref_v)),
            "grad_max_abs_diff": max(
                float(jnp.max(jnp.abs(g[h] - ref_g[h])))
                for h in ("emotion", "valence", "intensity")
            ),
        }
        for k, (v, g) in values.items()
    }
    out = {"batch": batch, "loss": float(ref_v), "agreement": agree}
    for k, fn in grad.items():
        out[f"{k}_ms"] = 1e3 * bench(fn, (logits, labels, weights), reps if "jit" in k else 5)
    return out


def step_ms_from(path: str) -> float:
    r = json.loads(Path(path).read_text())
    return r["jax"]["train_step_ms"]["median"]


def measured_step_ms(steps: int = 5) -> float:
    model = common.model_dir("minilm")
    state, step, _, _, _ = common.jax_setup(common.jax_config(model))
    batch = jax.device_put(common.fixed_batch(common.read_hf_config(model), 32, 64))
    for _ in range(2):
        state, m = step(state, batch)
        jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--step-batch", type=int, default=32, help="batch of the train step")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--step-json", default="")
    p.add_argument("--no-step", action="store_true", help="skip the train-step share")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    ensure_fast_runtime()
    result = {
        "meta": {**common.machine_info(), "command": " ".join(["python", *sys.argv])},
        "large": measure(args.batch, args.reps),
        "step_batch": measure(args.step_batch, args.reps),
    }
    if not args.no_step:
        step_ms = step_ms_from(args.step_json) if args.step_json else measured_step_ms()
        result["train_step_ms"] = step_ms
        result["train_step_source"] = args.step_json or "measured here (MiniLM, B=32, L=64)"
        result["share_of_step_at_step_batch"] = result["step_batch"]["matrix_jit_ms"] / step_ms
        result["share_of_step_at_large_batch"] = result["large"]["matrix_jit_ms"] / step_ms
    common.emit_json(result, args.json)


if __name__ == "__main__":
    main()
