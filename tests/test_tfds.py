"""`tfds:NAME[:SPLIT]` data source, on a tiny dataset built here (array_record, no TF)."""

from __future__ import annotations

import numpy as np
import pytest
import research_helpers as helpers

from cmhl_jax import data as data_lib

tfds = pytest.importorskip(
    "tensorflow_datasets",
    reason="tensorflow-datasets not installed (optional extra: pip install 'cmhl-jax[tfds]')",
)

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
