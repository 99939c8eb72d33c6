"""End to end through the command lines: train.py, then eval.py, on a tiny encoder and data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_config, tiny_train_args

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, BATCH, TRAIN_TEXTS = 3, 16, 96
STEPS = EPOCHS * TRAIN_TEXTS // BATCH
LOSS_TERMS = ("loss", "ce_emotion", "ce_valence", "ce_intensity", "exclusivity")
REPORT_KEYS = (
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "per_class",
    "confusion_matrix",
    "valence_accuracy",
    "intensity_accuracy",
    "head_agreement",
    "contradiction_rate",
    "ece",
)


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="0")
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{args[0]} timed out after {timeout}s:\n{err.stderr}")


def train_args(workdir, encoder, data, *extra) -> list[str]:
    """The tiny preset for whole epochs of 16 texts, one train shape (one compilation)."""
    return tiny_train_args(
        workdir,
        encoder,
        data,
        f"num_epochs={EPOCHS}",
        "max_steps=-1",
        f"batch_size={BATCH}",
        "data.max_length=64",
        "data.buckets=(64,)",
        f"log_every={TRAIN_TEXTS // BATCH}",  # one record per epoch
        *extra,
    )


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir, tiny_emotion_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    result = run(train_args(workdir, tiny_encoder_dir, tiny_emotion_data))
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_train_writes_config_metrics_and_checkpoints(trained):
    workdir, _ = trained
    config = json.loads((workdir / "config.json").read_text())
    assert config["optim"]["lr"] == 1e-3 and config["num_epochs"] == EPOCHS
    records = read_jsonl(workdir / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_macro_f1" in r]
    assert [r["step"] for r in train] == [6, 12, 18]
    assert len(val) == EPOCHS
    for record in train:
        for key in (*LOSS_TERMS, "lr", "samples_per_s", "grad_norm"):
            assert np.isfinite(record[key]), (key, record)
        assert record["samples_per_s"] > 0
    assert train[-1]["loss"] < train[0]["loss"], [r["loss"] for r in train]
    assert train[-1]["ce_emotion"] < train[0]["ce_emotion"]
    assert train[0]["compiles"] == 1  # one train shape
    latest = sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir())
    assert latest[-1] == STEPS
    assert any((workdir / "checkpoints" / "best").iterdir())
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == STEPS


@pytest.fixture(scope="module")
def evaluated(trained, tiny_emotion_data):
    workdir, _ = trained
    output = workdir / "eval" / "val.json"
    result = run(
        [
            "eval.py",
            "--workdir",
            str(workdir),
            "--data",
            str(tiny_emotion_data / "val.txt"),
            "--output",
            str(output),
        ]
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return output, result


@pytest.mark.slow
def test_eval_writes_every_metric_and_predictions(evaluated, tiny_emotion_data):
    output, result = evaluated
    report = json.loads(output.read_text())
    for key in REPORT_KEYS:
        assert key in report, key
    for key in ("accuracy", "macro_f1", "weighted_f1", "valence_accuracy", "ece"):
        assert 0.0 <= report[key] <= 1.0
    names = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert list(report["per_class"]) == names
    for scores in report["per_class"].values():
        assert {"precision", "recall", "f1"} <= set(scores)
    matrix = np.array(report["confusion_matrix"])
    val_lines = (tiny_emotion_data / "val.txt").read_text().splitlines()
    assert matrix.shape == (6, 6) and matrix.sum() == len(val_lines)
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] == report["accuracy"]
    predictions = read_jsonl(Path(report["predictions_file"]))
    assert len(predictions) == len(val_lines)
    assert [p["text"] for p in predictions] == [line.rsplit(";", 1)[0] for line in val_lines]
    for record in predictions:
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # The report's accuracy is the one of the predictions file.
    predicted = [p.get("emotion", p.get("prediction")) for p in predictions]
    assert set(predicted) <= set(names)
    correct = np.mean([x == p["label"] for x, p in zip(predicted, predictions, strict=True)])
    assert correct == pytest.approx(report["accuracy"])


@pytest.mark.slow
def test_rerun_of_a_finished_workdir_does_not_retrain(
    trained, evaluated, tiny_encoder_dir, tiny_emotion_data
):
    workdir, _ = trained
    before = (workdir / "metrics.jsonl").read_text()
    steps_before = sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir())
    result = run(train_args(workdir, tiny_encoder_dir, tiny_emotion_data))
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"resumed from step {STEPS}" in result.stderr
    assert (workdir / "metrics.jsonl").read_text() == before
    assert sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir()) == steps_before
    assert json.loads((workdir / "summary.json").read_text())["step"] == STEPS


@pytest.mark.slow
def test_workdir_of_another_head_layout_is_refused(
    trained, evaluated, tiny_encoder_dir, tiny_emotion_data, tmp_path
):
    workdir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    config_before = (copy / "config.json").read_text()
    result = run(
        train_args(
            copy,
            tiny_encoder_dir,
            tiny_emotion_data,
            "--config.affect.intensity_names=('low','medium','high')",
        )
    )
    assert result.returncode != 0
    assert "CheckpointModelMismatchError" in result.stderr
    assert "another model or head" in result.stderr
    assert "'intensity': 2" in result.stderr and "'intensity': 3" in result.stderr
    # The refused run left the workdir as it was (its config.json still describes it).
    assert (copy / "config.json").read_text() == config_before


@pytest.mark.slow
def test_bf16_matmuls_train_and_evaluate_like_float32(
    trained, evaluated, tiny_encoder_dir, tiny_emotion_data, tmp_path
):
    """`model.matmul_dtype=bfloat16` trains the same schedule to nearly the same losses and
    eval.py (which rebuilds the model from the workdir's config) reads its checkpoint."""
    workdir = tmp_path / "mixed"
    result = run(
        train_args(workdir, tiny_encoder_dir, tiny_emotion_data, "model.matmul_dtype=bfloat16")
    )
    assert result.returncode == 0, result.stderr[-5000:]
    mixed = [r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if "loss" in r]
    f32 = [r["loss"] for r in read_jsonl(trained[0] / "metrics.jsonl") if "loss" in r]
    assert len(mixed) == len(f32) == EPOCHS
    np.testing.assert_allclose(mixed, f32, rtol=0.02)
    output = workdir / "val.json"
    data = str(tiny_emotion_data / "val.txt")
    result = run(["eval.py", "--workdir", str(workdir), "--data", data, "--output", str(output)])
    assert result.returncode == 0, result.stderr[-5000:]
    reference = json.loads(evaluated[0].read_text())
    assert abs(json.loads(output.read_text())["accuracy"] - reference["accuracy"]) <= 0.1


@pytest.mark.slow
def test_unknown_config_key_suggests_the_close_one(tmp_path):
    result = run(
        [
            "train.py",
            "--config",
            "configs/default.py",
            "--workdir",
            str(tmp_path / "x"),
            "--config.optim.lrr=1",
        ],
        timeout=120,
    )
    assert result.returncode != 0
    assert "did you mean optim.lr" in result.stderr
    assert not (tmp_path / "x").exists()


def test_packed_and_unpacked_forward_give_the_same_logits(tiny_encoder_dir, tiny_emotion_data):
    from cmhl_jax import data as data_lib
    from cmhl_jax.model import build_model, forward
    from cmhl_jax.tasks import make_task

    config = tiny_config(
        tiny_encoder_dir, tiny_emotion_data, "data.max_length=64", "data.buckets=(64,)"
    )
    task = make_task(config)
    model_def, params, tokenizer = build_model(config.model, task, seed=0)
    examples = data_lib.load_split(tiny_emotion_data / "val.txt", list(task.label_names))
    token_ids = data_lib.tokenize_split(examples, tokenizer, config.data, cache_dir=None)
    logits_fn = jax.jit(lambda p, b: forward(model_def, p, b)["emotion"])

    def per_text(pack: bool) -> tuple[np.ndarray, int]:
        config.data.pack = pack
        config.data.pack_len = 64
        out = np.full((len(examples), 6), np.nan, np.float32)
        batches = list(
            data_lib.eval_batches(
                token_ids,
                examples.labels,
                options=data_lib.BatchOptions.from_config(config.data),
                batch_size=16,
                pad_id=int(tokenizer.pad_token_id),
            )
        )
        for batch in batches:
            logits = np.asarray(logits_fn(params, batch))
            index = batch["example_index"]
            out[index[index >= 0]] = logits[index >= 0]
        return out, max(int(b["text_mask"].sum(1).max()) for b in batches)

    unpacked, _ = per_text(False)
    packed, texts_per_row = per_text(True)
    assert texts_per_row > 1  # rows really hold several texts
    assert np.isfinite(unpacked).all() and np.isfinite(packed).all()
    np.testing.assert_allclose(packed, unpacked, rtol=0, atol=1e-5)
