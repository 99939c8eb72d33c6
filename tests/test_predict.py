"""Prediction: Python API, command line, robustness to odd inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import research_helpers as helpers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmhl_jax import predict, predict_cli

pytestmark = pytest.mark.slow  # subprocesses / a tiny training run

THREE = ["i feel wonderful today", "i am so angry at them", "that was a scary night"]
EMOTIONS = set(helpers.EMOTIONS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return helpers.trained_workdir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def predictor(workdir):
    return predict.Predictor.from_workdir(workdir)


def _check_record(record, text):
    assert record["text"] == text
    assert record["emotion"] in EMOTIONS
    assert set(record["probabilities"]) == EMOTIONS
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert record["confidence"] == max(record["probabilities"].values())
    assert record["valence"] in ("negative", "neutral", "positive")
    assert record["intensity"] in ("low", "high")
    assert 0.0 <= record["consistency"] <= 1.0


def test_api_three_texts(predictor):
    records = predictor.predict(THREE)
    assert len(records) == 3
    for record, text in zip(records, THREE, strict=True):
        _check_record(record, text)
    assert predictor.predict(THREE[0])[0]["probabilities"] == records[0]["probabilities"]
    assert predictor.predict([]) == []


def test_cli_three_texts(workdir):
    env = dict(os.environ, CMHL_FAST_RUNTIME="0")
    result = subprocess.run(
        [sys.executable, "-m", "cmhl_jax.predict", "--workdir", str(workdir), *THREE],
        capture_output=True,
        text=True,
        env=env,
        cwd=helpers.ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, text in zip(lines, THREE, strict=True):
        _check_record(json.loads(line), text)


def test_cli_input_file_and_bad_bytes(workdir, tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_bytes(b"first text\nbad \xff\xfe bytes\n\nlast one\n")
    output = tmp_path / "out.jsonl"
    argv = ["--workdir", str(workdir), "--input", str(source), "--output", str(output)]
    with pytest.raises(SystemExit) as exit_info:
        predict_cli.main(argv)
    assert exit_info.value.code == 1
    assert f"{source}:2: not valid UTF-8" in capsys.readouterr().err
    assert predict_cli.main([*argv, "--encoding_errors", "replace"]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["text"] for r in records] == ["first text", "bad \ufffd\ufffd bytes", "", "last one"]


def test_odd_inputs_one_output_each(predictor):
    texts = [
        "",
        "   ",
        "x" * 100_000,
        "word " * 30_000,
        "\x00\x01\x07\x1b[31m control \u200b\ufeff",
        "bad surrogate \ud800 here",
        b"raw \xff bytes",
        "emoji 😀🔥 and 中文 and عربى",
    ]
    records = predictor.predict(texts)
    assert len(records) == len(texts)
    for record in records:
        assert record["emotion"] in EMOTIONS
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # printable as UTF-8
    assert records[0]["text"] == "" and records[2]["text"] == "x" * 100_000
    assert records[5]["text"] == "bad surrogate ? here"
    assert records[6]["text"] == "raw \ufffd bytes"
    with pytest.raises(TypeError, match="str or bytes"):
        predictor.predict([None])


def test_ten_thousand_texts_static_shapes(workdir):
    predictor = predict.Predictor.from_workdir(workdir, batch_size=256)
    texts = [f"text number {i} " + "more words " * (i % 40) for i in range(10_000)]
    arrays = predictor.predict_arrays(texts)
    assert arrays["emotion"].shape == (10_000, 6)
    assert np.allclose(arrays["emotion"].sum(-1), 1.0, atol=1e-5)
    buckets = len(predictor.config.data.buckets)
    assert predictor.compiles <= buckets  # one compile per bucket, whatever the count
    single = predictor.predict_arrays(texts[1234:1235])["emotion"][0]
    np.testing.assert_allclose(single, arrays["emotion"][1234], atol=1e-5)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.text(st.characters(exclude_categories=()), max_size=300), max_size=6))
def test_property_any_unicode_one_output_each(predictor, texts):
    records = predictor.predict(texts)
    assert len(records) == len(texts)
    for record in records:
        assert record["emotion"] in EMOTIONS
        assert 0.0 <= record["consistency"] <= 1.0


def test_extra_outputs_such_as_gate_weights_are_passed_through(predictor):
    arrays = predictor.predict_arrays(THREE)
    arrays["gate"] = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]], np.float32)
    records = predictor.records(THREE, arrays)
    assert [r["gate"] for r in records] == [[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]]
    assert records[0]["emotion"] in EMOTIONS
