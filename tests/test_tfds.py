"""`tfds:NAME[:SPLIT]` data source and the project's TFDS builders (`cmhl_emotion`,
`cmhl_goemotions`), on tiny datasets built here (array_record, no TensorFlow).

tensorflow-datasets is in the test extra: these tests run in CI, they do not skip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import research_helpers as helpers
import tensorflow_datasets as tfds

from cmhl_jax import data as data_lib
from cmhl_jax.data import tfds_builders
from cmhl_jax.data.tfds_builders.__main__ import main as tfds_main
from cmhl_jax.tasks.goemotions import EMOTIONS as GOEMOTIONS_LABELS

LINES = helpers.emotion_lines(12, 0)


def _split(lines):
    pairs = (line.rsplit(";", 1) for line in lines)
    return [(text, helpers.EMOTIONS.index(label)) for text, label in pairs]


class TinyCmhlEmotion(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=list(helpers.EMOTIONS)),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(LINES[:8]),
            "validation": self._generate_examples(LINES[8:]),
        }

    def _generate_examples(self, lines):
        for i, (text, label) in enumerate(_split(lines)):
            yield i, {"text": text, "label": label}


@pytest.fixture()
def tfds_dir(tmp_path, monkeypatch):
    TinyCmhlEmotion(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_load_tfds_split(tfds_dir):
    names = list(helpers.EMOTIONS)
    for spec, lines in (("tfds:tiny_cmhl_emotion", LINES[:8]),
                        ("tfds:tiny_cmhl_emotion:validation", LINES[8:])):  # fmt: skip
        examples = data_lib.load_split(spec, names)
        expected = sorted(_split(lines))
        got = sorted(zip(examples.texts, examples.labels.tolist(), strict=True))
        assert got == expected
        assert examples.labels.dtype == np.int32


def test_split_spec_uses_tfds_dataset(tfds_dir):
    from cmhl_jax.config import load_config

    config = load_config(helpers.ROOT / "configs" / "default.py")
    config.data.tfds_dataset = "tiny_cmhl_emotion"
    assert data_lib.split_spec(config.data, "validation") == "tfds:tiny_cmhl_emotion:validation"


def test_label_names_must_match(tfds_dir):
    with pytest.raises(data_lib.DataError, match="label names"):
        data_lib.load_split("tfds:tiny_cmhl_emotion", ["a", "b"])


# ------------------------------------------------------------------------------------------
# The project's builders, prepared offline from local files (TFDS manual download)


@pytest.fixture()
def no_local_data(monkeypatch):
    monkeypatch.delenv("CMHL_DATA_DIR", raising=False)


@pytest.mark.slow  # a tiny training run
def test_cmhl_emotion_builder_trains_and_evaluates(tmp_path, monkeypatch, no_local_data):
    manual = helpers.emotion_data(tmp_path)  # train.txt, val.txt (`text;label`)
    tfds_data = tmp_path / "tfds"
    out = tfds_main(["cmhl_emotion", "--manual_dir", str(manual), "--data_dir",
                              str(tfds_data)])  # fmt: skip
    assert out == 0
    assert list(tfds_data.glob("cmhl_emotion/1.0.0/*.array_record*"))  # array_record files
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_data))
    names = list(helpers.EMOTIONS)
    for split, file in (("train", "train.txt"), ("validation", "val.txt")):
        got = data_lib.load_split(f"tfds:cmhl_emotion:{split}", names)
        expected = data_lib.read_examples(manual / file, names)
        assert sorted(zip(got.texts, got.labels.tolist(), strict=True)) == sorted(
            zip(expected.texts, expected.labels.tolist(), strict=True)
        )

    from cmhl_jax.evaluate import evaluate_split, load_trained
    from cmhl_jax.loop import train_and_evaluate

    config = helpers.tiny_config(tmp_path, ["max_steps=2"])
    config.data.local_dir = ""
    config.data.tfds_dataset = "cmhl_emotion"
    workdir = tmp_path / "run"
    summary = train_and_evaluate(config, workdir)
    assert summary["step"] == 2
    assert summary["val"]["num_examples"] == len(expected)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["data"]["tfds_dataset"] == "cmhl_emotion"
    report, examples, _ = evaluate_split(load_trained(workdir), "validation")
    assert examples.source == "tfds:cmhl_emotion:validation"
    assert report["num_examples"] == len(expected)


GOEMOTIONS_TRAIN = [
    "My favourite food is anything I didn't have to cook myself.\t27\teebbqej",
    '"So ""good"", thanks [NAME]!"\t15,0\tx1',
    "WHY THE FUCK IS BAYLESS ISOING\t2\teezlygj",
]
GOEMOTIONS_DEV = ["Is this in New Orleans?? I really feel like this is New Orleans.\t27,7\tedgurhb"]


def _goemotions_manual(path):
    path.mkdir()
    (path / "emotions.txt").write_text("\n".join(list(GOEMOTIONS_LABELS)))
    (path / "train.tsv").write_text("\n".join(GOEMOTIONS_TRAIN) + "\n")
    (path / "dev.tsv").write_text("\n".join(GOEMOTIONS_DEV) + "\n")
    return path


def test_cmhl_goemotions_builder_is_multi_label(tmp_path, monkeypatch):
    builder = tfds_builders.prepare(
        "cmhl_goemotions", manual_dir=_goemotions_manual(tmp_path / "ge"), data_dir=tmp_path / "t"
    )
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 3,
        "validation": 1,
    }
    assert builder.info.features["labels"].feature.names == list(GOEMOTIONS_LABELS)
    rows = {r["comment_id"].decode(): r for r in builder.as_data_source(split="train")}
    assert rows["x1"]["text"].decode() == 'So "good", thanks [NAME]!'  # CSV quoting undone
    assert sorted(int(i) for i in rows["x1"]["labels"]) == [0, 15]
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "t"))
    names = list(GOEMOTIONS_LABELS)
    dev = data_lib.load_split("tfds:cmhl_goemotions:validation", names)
    assert dev.texts == ["Is this in New Orleans?? I really feel like this is New Orleans."]
    assert dev.labels.shape == (1, 28) and dev.labels.dtype == np.float32
    assert np.flatnonzero(dev.labels[0]).tolist() == [7, 27]


def test_goemotions_label_names_are_checked(tmp_path):
    manual = _goemotions_manual(tmp_path / "ge")
    (manual / "emotions.txt").write_text("joy\nsadness")
    with pytest.raises(data_lib.DataError, match="label names"):
        tfds_builders.prepare("cmhl_goemotions", manual_dir=manual, data_dir=tmp_path / "t")


def test_unprepared_builder_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data_lib.DataError) as info:
        data_lib.load_split("tfds:cmhl_emotion:train", list(helpers.EMOTIONS))
    message = str(info.value)
    assert "python -m cmhl_jax.data.tfds_builders cmhl_emotion --manual_dir DIR" in message
    assert "\n" not in message
