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
        "--frameworks", "jax,torch_eager", "--memory", "child",
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
