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
    """The MPNet path (a tiny random MPNet of all-mpnet-base-v2's vocabulary), with each
    framework's whole-child and train-step peak memory."""
    out = tmp_path / "t.json"
    env = dict(os.environ, CMHL_BENCH_CACHE=str(tmp_path / "models"))
    cmd = [
        sys.executable, str(BENCH / "throughput.py"), "--model", "mpnet-tiny", "--batch", "4",
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
            "train_step_peak_mb",
        ):
            assert result[name][key] > 0, (name, key)
        e = result[name]
        assert e["train_step_peak_mb"] <= e["peak_memory_mb"] + 1e-6
        expected = e["train_step_peak_mb"] - e["memory"]["rss_after_setup_mb"]
        assert e["train_step_added_mb"] == pytest.approx(expected)
    assert result["meta"]["model"] == "mpnet-tiny"
    assert result["jax"]["executed_gflop_per_step"] > 0
    assert result["ratios"]["train_jax_over_torch_eager"] > 0
    assert result["meta"]["cores"] >= 1
    assert result["meta"]["settle_ms"] == 5
    md = (tmp_path / "t.md").read_text()
    assert "| jax |" in md and "train step peak MB (+ over setup)" in md


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


def _epoch_result(name, precision, texts, frameworks, model=None, share=0.39):
    """A minimal epoch.py result: {framework: (jax / it, macro-F1 jax - it, extra fields)}
    (``model`` None: a file written before epoch.py recorded it, i.e. MiniLM)."""
    ratios, out = {}, {}
    for fw, (ratio, f1, extra) in frameworks.items():
        ratios[f"epoch_time_jax_over_{fw}"] = ratio
        ratios[f"macro_f1_jax_minus_{fw}"] = f1
        out[fw] = extra
    meta = {"precision": precision, "train_texts": texts} | ({"model": model} if model else {})
    return name, {"meta": meta, "jax": {"flop_limit_share": share}, "ratios": ratios, **out}


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
            # another model's epoch: never a MiniLM target
            _epoch_result("epoch_mpnet.json", "fp32", 16000, {"hf_trainer": (0.7, 0, {})}, "mpnet"),
        ]
    )
    runs = full_epochs(files, "fp32")
    assert [r["meta"]["train_texts"] for r in runs] == [16000, 16000]
    cells = target_cells(None, runs)
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


def test_mpnet_is_a_model_choice_of_both_benchmarks():
    sys.path.insert(0, str(BENCH))
    import common
    import epoch

    assert {"mpnet", "mpnet-tiny"} <= set(common.MODELS)
    assert common.PRETRAINED["mpnet"] == "pypi:all-mpnet-base-v2"  # what the configs load
    assert common.RANDOM_MODELS["mpnet-tiny"]["model_type"] == "mpnet"
    # MPNet's <s> is token 0, as RoBERTa's; BERT's [CLS] is 101
    for model_type, first in (("mpnet", 0), ("roberta", 0), ("bert", 101)):
        batch = common.fixed_batch({"model_type": model_type, "vocab_size": 30527}, 2, 8)
        assert (batch["input_ids"][:, 0] == first).all()
    args = epoch.parse_args(["--model", "mpnet", "--frameworks", "jax,hf_trainer"])
    assert args.model == "mpnet" and args.names == ["jax", "hf_trainer"]
    assert common.preset(epoch.PRESETS["mpnet"]).model.encoder == "pypi:all-mpnet-base-v2"
    with pytest.raises(SystemExit):
        epoch.parse_args(["--model", "roberta"])


def _throughput_result(model, step_memory=True):
    """A minimal throughput.py result of JAX and torch eager."""

    def entry(ms, peak):
        e = {
            "train_step_ms": {"median": ms, "min": ms, "max": ms},
            "train_samples_per_s": 32e3 / ms,
            "train_samples_per_s_min": 32e3 / ms,
            "train_samples_per_s_max": 32e3 / ms,
            "train_tokens_per_s": 64 * 32e3 / ms,
            "infer_samples_per_s": 100.0,
            "infer_samples_per_s_min": 90.0,
            "infer_samples_per_s_max": 110.0,
            "first_step_s": 1.0,
            "peak_memory_mb": peak,
            "roof_gflops": 200.0,
            "train_gflops": 150.0,
            "train_roof_share": 0.75,
        }
        if step_memory:
            e |= {"train_step_peak_mb": peak - 100, "train_step_added_mb": 250.0}
        return e

    meta = {
        "model": model, "batch": 32, "seq": 64, "dtype": "float32", "device": "cpu",
        "cpu": "Test CPU (family 6, model 1)", "cpu_vendor": "Test", "cpu_family": "6",
        "cpu_model": "1", "cores": 2, "date": "today", "torch_version": "t", "jax_version": "j",
        "torch_threads": 2, "jax_backend": "cpu", "allocator": "jemalloc", "steps": 3,
        "warmup": 1, "settle_ms": 20, "command": "python benchmarks/throughput.py", "python": "3",
    }  # fmt: skip
    ratios = {
        "train_jax_over_torch_eager": 1.4,
        "infer_jax_over_torch_eager": 1.6,
        "memory_jax_over_torch_eager": 1.1,
    }
    return {
        "meta": meta,
        "jax": entry(500, 1100),
        "torch_eager": entry(700, 1000),
        "ratios": ratios,
    }


def test_report_shows_mpnet_targets_and_train_step_memory():
    sys.path.insert(0, str(BENCH))
    import report

    files = {
        "throughput_minilm_b32_l64.json": _throughput_result("minilm", step_memory=False),
        "throughput_mpnet_b32_l64.json": _throughput_result("mpnet"),
    }
    name, epoch_mpnet = _epoch_result(
        "epoch_mpnet.json", "fp32", 16000, {"torch_grouped": (0.9, 0.001, {})}, "mpnet", 0.55
    )
    files[name] = epoch_mpnet
    groups = {"Test CPU": files}
    main = "throughput_minilm_b32_l64.json"
    mpnet = report.model_targets(groups, "mpnet", main)
    assert mpnet.startswith("## Targets (CPU, MPNet (base size), B=32, L=64 unless stated)")
    # the MPNet targets come from the MPNet files only: its step ratio and its FLOP-limit share
    assert "| train step vs torch eager | >= 1.3x | 1.40x (met) |" in mpnet
    assert "| JAX epoch share of the FLOP limit | >= 70% | 55% (**missed**) |" in mpnet
    assert "epoch time vs torch_grouped (HF length-grouped order) | <= 0.75x | 0.90x" in mpnet
    minilm = report.model_targets(groups, "minilm", main)
    assert "| JAX epoch share of the FLOP limit | >= 70% | not measured |" in minilm
    # no MPNet results anywhere: no MPNet table
    del files["throughput_mpnet_b32_l64.json"], files["epoch_mpnet.json"]
    assert report.model_targets(groups, "mpnet", main) is None
    # the train-step memory column appears only in the result that has it
    minilm_md = report.throughput_md(files["throughput_minilm_b32_l64.json"])
    mpnet_md = report.throughput_md(_throughput_result("mpnet"))
    assert "train step peak MB" not in minilm_md
    assert "train step peak MB (+ over setup)" in mpnet_md and "| 1,000 (+250) |" in mpnet_md
    intro = report._epoch_intro(epoch_mpnet["meta"] | _EPOCH_META)
    assert intro[0] == "### One epoch, MPNet, 16000 training texts, 32 texts/update, fp32"


def test_report_compares_hidden_sizes_only_within_one_session():
    sys.path.insert(0, str(BENCH))
    import report

    minilm, mpnet = _throughput_result("minilm"), _throughput_result("mpnet")
    mpnet["jax"] |= {"train_gflops": 180.0, "train_roof_share": 0.9}
    mpnet["ratios"]["train_jax_over_torch_eager"] = 1.8
    files = {"throughput_minilm_b32_l64.json": minilm, "throughput_mpnet_b32_l64.json": mpnet}
    md = report.hidden_size_md("Test CPU", files)
    assert "| MiniLM (384) | float32 | 150 | 150 | 75% | 75% | 1.40x | – |" in md
    assert "| MPNet (768) | float32 | 180 | 150 | 90% | 75% | 1.80x | – |" in md
    assert "bfloat16" not in md  # no bf16 pair
    mpnet["meta"] = mpnet["meta"] | {"date": "another day"}
    assert report.hidden_size_md("Test CPU", files) is None


_EPOCH_META = {
    "batch_texts": 32, "cpu": "Test CPU", "cores": 2, "date": "today", "loadavg_1m_at_end": 1.0,
    "mean_tokens": 22.3, "max_tokens": 87, "command": "python benchmarks/epoch.py --model mpnet",
}  # fmt: skip


def test_report_keeps_the_hand_written_text_of_the_page(tmp_path):
    sys.path.insert(0, str(BENCH))
    import report

    out = tmp_path / "b.md"
    report.write_doc(out, "generated 1")
    assert out.read_text().startswith("# Benchmarks") and "generated 1" in out.read_text()
    out.write_text(out.read_text().replace(report.END, report.END + "\n\nBy hand.") + "More.\n")
    report.write_doc(out, "generated 2")
    text = out.read_text()
    assert "generated 2" in text and "generated 1" not in text
    assert text.endswith("By hand.\nMore.\n")


def test_docs_tables_are_the_committed_results():
    """docs/benchmarks.md's generated block is what report.py makes of benchmarks/results."""
    sys.path.insert(0, str(BENCH))
    import report

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    block = doc.split(report.BEGIN)[1].split(report.END)[0].strip()
    expected = "\n\n".join(
        report.generated_sections(BENCH / "results", "throughput_minilm_b32_l64.json")
    )
    assert block == expected.strip()
