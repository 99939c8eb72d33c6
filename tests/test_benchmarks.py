"""Smoke test of the benchmark harness (tiny random BERT, a few steps; < 60 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.slow
def test_throughput_json_keys(tmp_path):
    out = tmp_path / "t.json"
    env = dict(os.environ, CMHL_BENCH_CACHE=str(tmp_path / "models"))
    cmd = [
        sys.executable, str(BENCH / "throughput.py"), "--model", "tiny", "--batch", "4",
        "--seq", "16", "--steps", "2", "--warmup", "1", "--roof-n", "256",
        "--frameworks", "jax,torch_eager", "--memory", "child", "--settle-ms", "5",
        "--json", str(out), "--md", str(tmp_path / "t.md"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("jax", "torch_eager"):
        for key in (
            "train_samples_per_s",
            "train_tokens_per_s",
            "infer_samples_per_s",
            "peak_memory_mb",
            "roof_gflops",
            "train_gflops",
            "train_roof_share",
            "first_step_s",
        ):
            assert result[name][key] > 0, (name, key)
    assert result["jax"]["executed_gflop_per_step"] > 0
    assert result["ratios"]["train_jax_over_torch_eager"] > 0
    assert result["meta"]["cores"] >= 1
    assert result["meta"]["settle_ms"] == 5
    assert "| jax |" in (tmp_path / "t.md").read_text()


@pytest.mark.slow
def test_loss_bench_matrix_equals_loop():
    sys.path.insert(0, str(BENCH))
    import loss_bench

    r = loss_bench.measure(16, reps=2)
    for variant in ("loop_jit", "loop_eager"):
        assert r["agreement"][variant]["loss_abs_diff"] < 1e-5
        assert r["agreement"][variant]["grad_max_abs_diff"] < 1e-5
    assert r["matrix_jit_ms"] > 0


def test_op_categories():
    sys.path.insert(0, str(BENCH))
    from profile_step import op_category

    assert op_category("ynn_fusion", "jvp(blh,hnd->bnld)/dot_general") == "matmul (forward)"
    assert op_category("dot", "transpose(jvp())/transpose") == "matmul (backward)"
    assert op_category("add_select_fusion", "jit(_where)/select_n").startswith("AdamW")
    assert op_category("copy_bitcast_fusion", "jvp()/reshape") == "copies and transposes"
    assert op_category("multiply_erf_fusion", "jvp()/erf").startswith("elementwise")


def test_matmul_floor_counts_each_weight_matmul_of_the_step():
    sys.path.insert(0, str(BENCH))
    import matmul_probe

    h, i = matmul_probe.HIDDEN, matmul_probe.FFN
    for tokens in matmul_probe.STEP_TOKENS:
        # with each shape "taking" its FLOPs, the floor is the step's weight-matmul FLOPs:
        # forward + dx + dW = 3x the forward, 5 full layers and the last one's key and value
        flops = {name: 2.0 * m * k * n for name, (m, k, n) in matmul_probe.SHAPES.items()}
        forward_layer = 2 * tokens * (4 * h * h + 2 * h * i)
        expected = 3 * (5 * forward_layer + 2 * tokens * 2 * h * h)
        assert matmul_probe.matmul_floor_ms(flops, tokens) == pytest.approx(expected)


def _epoch_result(name, precision, texts, frameworks):
    """A minimal epoch.py result: {framework: (jax / it, macro-F1 jax - it, extra fields)}."""
    ratios, out = {}, {}
    for fw, (ratio, f1, extra) in frameworks.items():
        ratios[f"epoch_time_jax_over_{fw}"] = ratio
        ratios[f"macro_f1_jax_minus_{fw}"] = f1
        out[fw] = extra
    meta = {"precision": precision, "train_texts": texts}
    return name, {"meta": meta, "jax": {"flop_limit_share": 0.39}, "ratios": ratios, **out}


def test_targets_take_missing_baselines_from_the_cpus_other_epoch_files():
    sys.path.insert(0, str(BENCH))
    from report import _pause, full_epochs, target_cells

    files = dict(
        [
            _epoch_result(
                "epoch_minilm.json",
                "fp32",
                16000,
                {
                    "torch_grouped": (1.02, -0.003, {}),
                    "torch_grouped_compile": (0.45, 0.003, {"compile_shapes": "buckets"}),
                },
            ),
            _epoch_result(
                "epoch_minilm_reference.json",
                "fp32",
                16000,
                {
                    "torch": (0.55, -0.01, {}),
                    "torch_grouped": (0.9, 0.0, {}),  # the main file's row wins
                    "torch_grouped_compile": (0.8, 0.002, {"compile_shapes": "dynamic"}),
                },
            ),
            _epoch_result("epoch_minilm_bf16.json", "bf16", 16000, {"torch": (0.1, 0.0, {})}),
            _epoch_result("epoch_minilm_small.json", "fp32", 4000, {"hf_trainer": (0.5, 0, {})}),
        ]
    )
    runs = full_epochs(files, "fp32")
    assert [r["meta"]["train_texts"] for r in runs] == [16000, 16000]
    cells = target_cells(None, runs, None)
    assert cells["epoch time vs torch_grouped (HF length-grouped order)"].startswith("1.02x")
    # torch.compile: the faster of its shape modes, i.e. the larger JAX / it ratio, named
    compiled = cells["epoch time vs torch_grouped_compile"]
    assert compiled == "0.80x (macro-F1 +0.002, dynamic)"
    assert cells["epoch time vs torch (random order, reference)"] == "0.55x (macro-F1 -0.010) (met)"
    assert "epoch time vs hf_trainer (Trainer, group_by_length)" not in cells  # 4,000 texts only
    assert cells["JAX epoch share of the FLOP limit"] == "39% (**missed**)"
    assert _pause({"settle_ms": 20.0}) == " (20 ms pause before each)"
    assert _pause({"settle_ms": 0}) == " (back to back)"
    assert "before the pause" in _pause({})


@pytest.mark.slow
def test_profile_step_traces_ops(tmp_path):
    out = tmp_path / "p.json"
    env = dict(os.environ, CMHL_BENCH_CACHE=str(tmp_path / "models"))
    cmd = [
        sys.executable, str(BENCH / "profile_step.py"), "--model", "tiny", "--batch", "4",
        "--seq", "16", "--steps", "2", "--trace-steps", "1", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = json.loads(out.read_text())["ops"]
    assert ops["op_category_ms"]["matmul (forward)"] > 0
    assert ops["op_category_ms"]["matmul (backward)"] > 0
    assert abs(sum(ops["op_category_ms"].values()) - ops["sum_of_op_ms"]) < 1e-6
    assert ops["top_ops"] and all(o["ms"] > 0 for o in ops["top_ops"])
    # the NaN guard's cond spans the optimizer's ops: only the ops inside it are counted
    assert any(o["jax_op"].startswith("cond/") for o in ops["top_ops"])
    assert not {o["kind"] for o in ops["top_ops"]} & {"cond", "conditional", "while"}


def test_epoch_grouped_order_and_stepper():
    sys.path.insert(0, str(BENCH))
    import numpy as np
    from epoch import Stepper, text_order

    lengths = np.random.default_rng(0).integers(3, 90, 1000)
    for kind in ("random", "grouped"):
        order = text_order(kind, lengths, 8, seed=0)
        assert sorted(order.tolist()) == list(range(1000))
    grouped = text_order("grouped", lengths, 8, seed=0)
    padded = {
        kind: sum(lengths[o[i : i + 8]].max() * len(o[i : i + 8]) for i in range(0, len(o), 8))
        for kind, o in (("random", text_order("random", lengths, 8, 0)), ("grouped", grouped))
    }
    assert padded["grouped"] < 0.7 * padded["random"]

    seen = []

    def target(pause):
        for i in range(3):
            seen.append(i)
            pause()
        seen.append("end")

    steps = 0
    for _ in Stepper(target):
        steps += 1
        assert len(seen) == steps  # one step per next()
    assert steps == 3 and seen == [0, 1, 2, "end"]


@pytest.mark.slow
def test_epoch_frameworks_json(tmp_path):
    import accelerate  # noqa: F401  (the test extra: transformers.Trainer needs it)
    from conftest import make_emotion_data

    # Its own data (not epoch.py's default, ../shared/data/emotion, which a clone lacks):
    # 40 training texts, fewer than --limit, so that the count shows which files were read.
    data = make_emotion_data(tmp_path / "data", n_train=40, n_val=16)
    env = dict(os.environ, CMHL_DATA_DIR=str(data))
    out = tmp_path / "e.json"
    names = ["jax", "torch", "torch_grouped", "hf_trainer"]
    cmd = [
        sys.executable, str(BENCH / "epoch.py"), "--limit", "48", "--val-limit", "16",
        "--batch", "16", "--roof-n", "256", "--frameworks", ",".join(names), "--json", str(out),
        "--precision", "bf16",  # the fp32 path differs only in this flag
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for n in names:
        for key in ("epoch_s", "samples_per_s", "computed_tokens", "flop_limit_share"):
            assert r[n][key] > 0, (n, key)
        assert 0 <= r[n]["val_macro_f1"] <= 1
        assert r[n]["texts"] == 40  # the test's train.txt, not the first 48 of another
    assert r["meta"]["flop_limit_s"] > 0 and r["meta"]["cpu_vendor"]
    assert r["meta"]["precision"] == "bf16"
    assert r["meta"]["settle_ms"] == 20  # the default pause before each update
    assert r["ratios"]["epoch_time_jax_over_hf_trainer"] > 0
