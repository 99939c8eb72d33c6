"""Every command on every task, on a model trained until its outputs vary as a real model's do.

For each task's shipped MiniLM config (on the tiny random encoder and generated data): train,
then `eval.py --plots`, the predict CLI on raw texts and on a file, `cmhl-export` and predict
from the export, and `cmhl-ablation` with one arm and one seed. Each must exit 0 and write its
outputs; the multi-label model must predict 0, 1 and several labels for different texts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script, make_emotion_data, make_reddit_mh_data
from test_goemotions import make_goemotions_data

from cmhl_jax import ablation, export_cli, predict_cli, train_cli

pytestmark = pytest.mark.slow  # trainings of a few hundred tiny steps

ROOT = Path(__file__).resolve().parents[1]
# Shared by every task: the tiny encoder's shapes, one compiled train shape, a learning rate
# that gets a 2-layer encoder past its initial state in a few hundred steps.
TINY = (
    "data.max_length=32",
    "data.buckets=(32,)",
    "data.pack_len=32",
    "data.max_texts_per_row=4",
    "batch_size=8",
    "eval_batch_size=16",
    "optim.lr=0.003",
    "optim.accum_steps=1",
    "num_epochs=100",
    "parallel.mode=single",
)
# task: (config file, data maker, training steps, extra overrides, texts to predict)
TASKS = {
    "emotion": (
        "emotion_minilm.py",
        make_emotion_data,
        60,
        (),
        ["i feel happy and glad today", "i am furious and angry", "a table"],
    ),
    "mental_health": (
        "swmh_minilm.py",
        make_reddit_mh_data,
        30,
        ("mental_health.early_stopping.patience=0",),
        ["i cannot sleep and everything feels hopeless", "my heart races before exams", "ok"],
    ),
    "goemotions": (
        "goemotions_minilm.py",
        lambda path: make_goemotions_data(path, n_train=320, n_dev=40),
        500,
        ("data.val_split=dev", "optim.lr=0.006"),
        ["i am happy", "thanks and sad", "i am angry and glad and thankful", "table"],
    ),
}


def _eval_cli():
    return load_script("eval.py")


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_command_on_a_trained_model(task, tmp_path, tiny_encoder_dir, capsys):
    config_file, make_data, steps, extra, texts = TASKS[task]
    data = make_data(tmp_path / "data")
    overrides = [
        f"--config.model.encoder={tiny_encoder_dir}",
        f"--config.data.local_dir={data}",
        *(f"--config.{o}" for o in (*TINY, *extra)),
    ]
    config = str(ROOT / "configs" / config_file)
    workdir = tmp_path / "run"

    # --- train ------------------------------------------------------------------------------
    argv = ["--config", config, "--workdir", str(workdir), f"--config.max_steps={steps}"]
    assert train_cli.main([*argv, *overrides]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == steps

    # --- eval.py --plots ------------------------------------------------------------------
    val = next(p for p in sorted(data.iterdir()) if p.stem in ("val", "dev"))
    output = tmp_path / "eval" / "val.json"
    argv = ["--workdir", str(workdir), "--data", str(val), "--output", str(output), "--plots"]
    assert _eval_cli().main(argv) == 0
    report = json.loads(output.read_text())
    assert report["plots"] and all(Path(p).stat().st_size > 1000 for p in report["plots"])
    records = _json_lines(Path(report["predictions_file"]).read_text())
    assert len(records) == report["num_examples"] > 0
    if task == "goemotions":
        assert {"macro_ap", "micro_ap", "tuned_macro_f1"} <= set(report)
        # The trained model gives its one- and two-label texts one and two labels. A per-label
        # threshold above every neutral probability (goemotions.thresholds in the workdir's
        # config) leaves the neutral-only texts with none: then eval and predict see 0, 1 and 2.
        assert {1, 2} <= {len(r["labels"]) for r in records}
        neutral = max(r["probabilities"]["neutral"] for r in records)
        run_config = json.loads((workdir / "config.json").read_text())
        thresholds = [0.3] * 28
        thresholds[-1] = (neutral + 1) / 2
        run_config["goemotions"]["thresholds"] = thresholds
        (workdir / "config.json").write_text(json.dumps(run_config))
        assert _eval_cli().main(argv) == 0
        records = _json_lines(Path(report["predictions_file"]).read_text())
        counts = {len(r["labels"]) for r in records}
        assert {0, 1} <= counts and max(counts) >= 2, counts  # none, one, several
        assert json.loads(output.read_text())["no_label_rate"] > 0
    capsys.readouterr()

    # --- predict: raw texts, a file ----------------------------------------------------------
    assert predict_cli.main(["--workdir", str(workdir), *texts]) == 0
    printed = _json_lines(capsys.readouterr().out)
    assert [r["text"] for r in printed] == texts
    inputs, predictions = tmp_path / "texts.txt", tmp_path / "predictions.jsonl"
    inputs.write_text("\n".join(texts) + "\n")
    argv = ["--workdir", str(workdir), "--input", str(inputs), "--output", str(predictions)]
    assert predict_cli.main(argv) == 0
    from_file = _json_lines(predictions.read_text())
    assert [r["text"] for r in from_file] == texts

    # --- export, then predict from the export ------------------------------------------------
    exported = tmp_path / "export"
    assert export_cli.main(["--workdir", str(workdir), "--out", str(exported)]) == 0
    capsys.readouterr()
    assert predict_cli.main(["--export", str(exported), *texts]) == 0
    from_export = _json_lines(capsys.readouterr().out)
    for a, b in zip(printed, from_export, strict=True):
        assert a.keys() == b.keys()
        assert np.allclose(list(a["probabilities"].values()), list(b["probabilities"].values()))

    # --- cmhl-ablation, one arm and one seed ----------------------------------------------
    out = tmp_path / "ablation"
    argv = ["--config", config, "--out", str(out), "--seeds", "1", "--arms", "ce_only"]
    argv += ["--resamples", "20", "--config.max_steps=4", *overrides]
    assert ablation.main(argv) == 0
    table = (out / "ablation.md").read_text()
    assert "| `ce_only` | 1 |" in table
    # Run again: the scored run is skipped (its stored config, data statistics included,
    # matches), not refused or retrained.
    record = out / "runs" / "ce_only_s0.json"
    mtime = record.stat().st_mtime_ns
    assert ablation.main(argv) == 0
    assert record.stat().st_mtime_ns == mtime
