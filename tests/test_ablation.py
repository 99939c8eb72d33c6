"""Ablation machinery: bootstrap CIs, the mean/sd table, sweeps, a resumable smoke run."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import research_helpers as helpers

from cmhl_jax import ablation, stats
from cmhl_jax.config import load_config
from cmhl_jax.docs import markers
from cmhl_jax.metrics import classification_scores
from cmhl_jax.tasks import make_task

NUM_CLASSES = 6


def _noisy_preds(labels, accuracy, seed):
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) > accuracy
    preds = labels.copy()
    preds[wrong] = (labels[wrong] + rng.integers(1, NUM_CLASSES, wrong.sum())) % NUM_CLASSES
    return preds


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(0).integers(0, NUM_CLASSES, 400)


def test_confusion_scores_match_metrics(labels):
    preds = _noisy_preds(labels, 0.6, 1)
    weights = np.ones((1, len(labels)))
    scores = stats.scores_from_confusions(stats._confusions(weights, labels, preds, NUM_CLASSES))
    reference = classification_scores(labels, preds, [str(i) for i in range(NUM_CLASSES)])
    assert scores["accuracy"][0] == pytest.approx(reference["accuracy"])
    assert scores["macro_f1"][0] == pytest.approx(reference["macro_f1"])


def test_bootstrap_clearly_better_arm_has_ci_above_zero(labels):
    better = np.stack([_noisy_preds(labels, 0.9, s) for s in range(3)])
    worse = np.stack([_noisy_preds(labels, 0.6, 10 + s) for s in range(3)])
    ci = stats.paired_bootstrap(labels, better, worse, NUM_CLASSES, num_resamples=500, seed=0)
    for metric in ("accuracy", "macro_f1"):
        assert 0 < ci[metric]["low"] < ci[metric]["diff"] < ci[metric]["high"]
        assert ci[metric]["p_le_0"] == 0.0
    reverse = stats.paired_bootstrap(labels, worse, better, NUM_CLASSES, num_resamples=500)
    assert reverse["macro_f1"]["high"] < 0


def test_bootstrap_identical_and_equal_arms_contain_zero(labels):
    preds = np.stack([_noisy_preds(labels, 0.7, s) for s in range(2)])
    same = stats.paired_bootstrap(labels, preds, preds.copy(), NUM_CLASSES, num_resamples=300)
    for metric in ("accuracy", "macro_f1"):
        assert same[metric]["low"] <= 0 <= same[metric]["high"]
        assert same[metric]["diff"] == 0
    other = np.stack([_noisy_preds(labels, 0.7, 100 + s) for s in range(2)])
    equal = stats.paired_bootstrap(labels, preds, other, NUM_CLASSES, num_resamples=1000)
    for metric in ("accuracy", "macro_f1"):
        assert equal[metric]["low"] < 0 < equal[metric]["high"]


def test_bootstrap_is_seeded_and_checks_shapes(labels):
    a, b = _noisy_preds(labels, 0.8, 1), _noisy_preds(labels, 0.7, 2)
    first = stats.paired_bootstrap(labels, a, b, NUM_CLASSES, num_resamples=200, seed=3)
    again = stats.paired_bootstrap(labels, a, b, NUM_CLASSES, num_resamples=200, seed=3)
    assert first == again
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_bootstrap(labels, np.stack([a, a]), b[None], NUM_CLASSES)


def test_mean_sd_and_formatting():
    mean, sd = stats.mean_sd([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and sd == pytest.approx(0.02)
    assert math.isnan(stats.mean_sd([0.5])[1])
    assert stats.format_mean_sd(0.92, 0.02) == "92.00 ± 2.00"
    assert stats.format_mean_sd(0.5, math.nan) == "50.00 ± –"
    assert stats.format_ci(0.01, -0.002, 0.02) == "+1.00 [-0.20, +2.00]"


def test_summary_table_has_mean_sd_and_ci_columns(labels):
    metrics = make_task(load_config(helpers.ROOT / "configs" / "tiny.py")).table_metrics
    arms = ablation.build_arms(["ce_only", "cmhl_sum"], [])
    results = {}
    for seed in range(2):
        for arm, accuracy in (("ce_only", 0.6), ("cmhl_sum", 0.9)):
            preds = _noisy_preds(labels, accuracy, seed * 7 + len(arm))
            scores = classification_scores(labels, preds, [str(i) for i in range(NUM_CLASSES)])
            results[(arm, seed)] = {
                **{m: scores.get(m, 0.1) for m in metrics},
                "labels": labels,
                "preds": preds,
            }
    rows = ablation.summarize(
        results, arms, num_classes=NUM_CLASSES, resamples=300, bootstrap_seed=0, metrics=metrics
    )
    assert [r["arm"] for r in rows] == ["ce_only", "cmhl_sum"]
    assert rows[1]["macro_f1_low"] > 0 and rows[1]["paired_seeds"] == 2
    table = ablation.markdown_table(rows, split="val", metrics=metrics)
    assert "accuracy" in table and "macro-F1" in table and "ECE" in table
    assert "[95% CI]" in table and "±" in table and "reference" in table


def test_build_arms_and_sweeps():
    sweeps = [ablation.parse_sweep("loss.alpha=0.25,0.5"), ablation.parse_sweep("affect.tau0=0.4")]
    arms = ablation.build_arms(["cmhl_sum"], sweeps)
    assert [a.name for a in arms] == [
        "ce_only",
        "cmhl_sum[alpha=0.25,tau0=0.4]",
        "cmhl_sum[alpha=0.5,tau0=0.4]",
    ]
    assert arms[1].overrides == ("loss.variant=sum", "loss.alpha=0.25", "affect.tau0=0.4")
    assert "[" not in arms[1].dirname and "/" not in arms[1].dirname
    with pytest.raises(ablation.ConfigError, match="unknown arm"):
        ablation.build_arms(["nope"], [])
    with pytest.raises(ablation.ConfigError):
        ablation.parse_sweep("loss.alpha")


def test_update_readme_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    start, end = markers("ablation")
    readme.write_text(f"# x\n\n{start}\nold\n{end}\nend\n")
    table = tmp_path / "ablation.md"
    table.write_text("| arm |\n|---|\n| `ce_only` |\n")
    ablation.main(["--readme", str(readme), "--from", str(tmp_path)])
    text = readme.read_text()
    assert "old" not in text and "| `ce_only` |" in text and text.endswith("end\n")
    readme.write_text("no markers")
    with pytest.raises(ablation.AblationError, match="markers"):
        ablation.update_readme(readme, table)


@pytest.mark.slow
def test_smoke_ablation_is_resumable(tmp_path_factory, caplog):
    base = tmp_path_factory.getbasetemp()
    out = tmp_path_factory.mktemp("ablation")
    argv = [
        "--config",
        str(helpers.ROOT / "configs" / "tiny.py"),
        "--out",
        str(out),
        "--seeds",
        "2",
        "--arms",
        "ce_only,cmhl_sum",
        "--resamples",
        "200",
        *(f"--config.{o}" for o in helpers.tiny_overrides(base)),
    ]
    assert ablation.main(argv) == 0
    md = (out / "ablation.md").read_text()
    assert "| `cmhl_sum` | 2 |" in md and "±" in md and "[95% CI]" in md
    csv_lines = (out / "ablation.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "macro_f1_low" in csv_lines[0]
    assert len((out / "ablation_runs.csv").read_text().splitlines()) == 5
    assert (out / "ablation_val.png").stat().st_size > 1000
    summaries = sorted((out / "workdirs").glob("*/summary.json"))
    assert len(summaries) == 4
    records = sorted((out / "runs").glob("*.json"))
    assert [p.stem for p in records] == ["ce_only_s0", "ce_only_s1", "cmhl_sum_s0", "cmhl_sum_s1"]
    assert all(p.with_suffix(".npz").is_file() for p in records)
    mtimes = [p.stat().st_mtime_ns for p in summaries + records]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cmhl_jax.ablation"):
        assert ablation.main(argv) == 0
    skipped = [r for r in caplog.records if r.getMessage().startswith("skip ")]
    assert len(skipped) == 4
    assert [p.stat().st_mtime_ns for p in summaries + records] == mtimes
    assert (out / "ablation.md").read_text() == md

    # The committed records alone are enough: without the workdirs nothing is retrained.
    shutil.rmtree(out / "workdirs")
    assert ablation.main(argv) == 0
    assert (out / "ablation.md").read_text() == md
    assert not list((out / "workdirs").glob("*/summary.json"))

    # Same --out with another config is refused instead of mixing runs.
    with pytest.raises(SystemExit) as exit_info:
        ablation.main([*argv, "--config.optim.lr=0.5"])
    assert exit_info.value.code == 1


def test_arms_without_code(tmp_path):
    """A custom arm is a name plus overrides, from --arm or an arms file; values may hold
    commas; a plug-in arm sits in the same table as the built-in ones."""
    name, overrides = ablation.parse_arm("focal=loss.fn=examples.focal:loss,loss.gamma=2")
    assert name == "focal" and overrides == ["loss.fn=examples.focal:loss", "loss.gamma=2"]
    assert ablation.split_overrides("data.buckets=(16,32),loss.lam=0") == [
        "data.buckets=(16,32)",
        "loss.lam=0",
    ]
    with pytest.raises(ablation.ConfigError, match="NAME=KEY=VALUE"):
        ablation.parse_arm("focal")
    arms_file = tmp_path / "arms.py"
    arms_file.write_text("def get_arms():\n    return {'no_excl': 'loss.lam=0', 'b': ['a.b=1']}\n")
    assert ablation.load_arms_file(str(arms_file)) == {"no_excl": ["loss.lam=0"], "b": ["a.b=1"]}
    arms = ablation.build_arms(["cmhl_sum", "focal"], [], {"focal": overrides})
    assert [a.name for a in arms] == ["ce_only", "cmhl_sum", "focal"]
    assert arms[2].overrides == tuple(overrides)


def test_records_are_matched_across_machines():
    """A committed record is reused on another machine: split files and machine paths may
    differ, everything else in the config must match."""
    assert ablation.spec_id("/a/b/val.txt") == ablation.spec_id("../shared/data/val.txt")
    assert ablation.spec_id("hf:dair-ai/emotion:validation") == "hf:dair-ai/emotion:validation"
    stored = {"data": {"local_dir": "/x", "max_length": 128}, "optim": {"lr": 1e-4}}
    same = {"data": {"local_dir": "../y", "max_length": 128}, "optim": {"lr": 1e-4}, "new": 1}
    assert ablation.config_differences(stored, same) == []
    other = {"data": {"local_dir": "/x", "max_length": 64}, "optim": {"lr": 1e-4}}
    assert ablation.config_differences(stored, other) == ["data.max_length"]
    # Counts fitted from the training split are filled after a workdir's config is stored.
    fitted = {"goemotions": {"cooccurrence": [[3, 1], [1, 2]], "tau0": 0.6}}
    assert (
        ablation.config_differences({"goemotions": {"cooccurrence": [], "tau0": 0.6}}, fitted) == []
    )
    assert ablation.config_differences({"goemotions": {"tau0": 0.5}}, fitted) == ["goemotions.tau0"]


def test_curve_table_means_over_seeds():
    records = [
        {"arm": "ce_only", "val_curve": [{"epoch": 0, "val_macro_f1": 0.5}]},
        {"arm": "ce_only", "val_curve": [{"epoch": 0, "val_macro_f1": 0.7}]},
    ]
    table = ablation.curve_table(records)
    assert "| `ce_only` | 60.00 (n=2) |" in table and "epoch 1" in table


def test_exclusivity_activity_forms_on_the_emotion_task(tmp_path, capsys):
    """`scripts/exclusivity_activity.py --forms` on hand-made emotion runs, at the default affect
    tables (joy-sadness: tau = 0.3, the farthest pair): joy 0.97 alone fires only the sum form
    (0.976 > 0.3; the product 0.006 < 0.15^2, the min 0.006 < 0.15), joy = sadness = 0.5 fires
    all three, surprise alone (in no pair) none."""
    from conftest import EMOTION_NAMES, load_script

    from cmhl_jax.ablation.runs import flat_config

    script = load_script("scripts/exclusivity_activity.py")
    probs = np.full((3, 6), 0.006, np.float32)
    joy, sadness, surprise = (EMOTION_NAMES.index(e) for e in ("joy", "sadness", "surprise"))
    probs[0, joy] = 0.97
    probs[1] = 0.0
    probs[1, [joy, sadness]] = 0.5
    probs[2] = 0.0
    probs[2, surprise] = 1.0
    config = flat_config(load_config(str(helpers.ROOT / "configs" / "tiny.py")))
    assert config["task"] == "emotion"
    runs = tmp_path / "runs"
    runs.mkdir()
    for arm, lam in (("ce_only", 0.0), ("cmhl_product", 0.4)):
        record = {"arm": arm, "seed": 0, "config": {**config, "loss.lam": lam}}
        record["config"]["loss.variant"] = "product"
        (runs / f"{arm}_s0.json").write_text(json.dumps(record))
        np.savez(runs / f"{arm}_s0.npz", val_probs=probs)
    script.main([str(tmp_path), "--forms"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| `ce_only` | 1 | 66.67 | 33.33 | 33.33 | 82.33 |"  # (97 + 50 + 100) / 3
    assert lines[3] == "| `cmhl_product` | 1 | 66.67 | **33.33** | 33.33 | 82.33 |"


def test_precision_compare_on_hand_made_runs(tmp_path):
    """`scripts/precision_compare.py` on two hand-made runs: the score differences, the share
    of val texts where both predict the same emotion (2 of 3) and the mean confidence gap
    ((0.1 + 0 + 0.2) / 3 = 0.1), the loss curves on their common steps; runs over different
    val texts are refused."""
    from conftest import load_script

    script = load_script("scripts/precision_compare.py")

    def run(name, dtype, acc, emotions, confidences, losses):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"model": {"matmul_dtype": dtype}}))
        val = {"accuracy": acc, "macro_f1": acc - 0.1, "weighted_f1": acc, "ece": 0.05}
        (path / "val.json").write_text(json.dumps(val | {"step": 10}))
        preds = [
            {"text": f"t{i}", "emotion": e, "confidence": c}
            for i, (e, c) in enumerate(zip(emotions, confidences, strict=True))
        ]
        (path / "val.predictions.jsonl").write_text("\n".join(map(json.dumps, preds)))
        rows = [{"step": s, "loss": v} for s, v in losses.items()] + [{"step": 10, "val_x": 1}]
        (path / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
        return path

    a = run("a", "bfloat16", 0.90, ["joy", "anger", "fear"], [0.9, 0.8, 0.7], {5: 1.5, 10: 1.0})
    b = run("b", "float32", 0.88, ["joy", "anger", "joy"], [0.8, 0.8, 0.5], {5: 1.25, 7: 1.1})
    lines = script.compare(a, b)
    assert "| bfloat16 − float32 | +2.00 | +2.00 | +2.00 | +0.00 | |" in lines
    agreement = next(x for x in lines if "same emotion" in x)
    assert "2 of 3 val texts (66.7%)" in agreement and "confidence 10.00 points" in agreement
    assert "| 5 | 1.5000 | 1.2500 | +0.2500 |" in lines
    assert not any(x.startswith(("| 7 |", "| 10 |")) for x in lines)
    (b / "val.predictions.jsonl").write_text(json.dumps({"text": "other", "emotion": "joy"}))
    with pytest.raises(ValueError, match="different val texts"):
        script.compare(a, b)
