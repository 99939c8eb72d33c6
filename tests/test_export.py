"""Export to Hugging Face encoder + heads.safetensors + heads.json, and import back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import research_helpers as helpers

from cmhl_jax import export, export_cli
from cmhl_jax.predict import Predictor

TEXTS = ["i feel wonderful today", "i am so angry at them", "", "that was a scary night " * 40]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    workdir = helpers.trained_workdir(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("export")
    export_cli.main(["--workdir", str(workdir), "--out", str(out)])
    return workdir, out


@pytest.mark.slow
def test_export_files(exported):
    _, out = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "heads.safetensors", "heads.json"} <= names
    assert "tokenizer.json" in names or "vocab.txt" in names
    meta = json.loads((out / "heads.json").read_text())
    assert meta["format"] == export.FORMAT and meta["task"] == "emotion"
    assert meta["heads"]["emotion"] == {"size": 6, "labels": list(helpers.EMOTIONS)}
    assert meta["parameters"]["emotion.kernel"] == [32, 6]
    assert meta["affect"]["positive_set"] == ["joy", "love"]
    assert meta["config"]["loss"]["variant"] == "sum"


@pytest.mark.slow
def test_encoder_loads_in_transformers(exported):
    transformers = pytest.importorskip("transformers")
    _, out = exported
    model, info = transformers.AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tokenizer("hello")["input_ids"][0] == tokenizer.cls_token_id


@pytest.mark.slow
def test_import_predictions_match_workdir(exported):
    workdir, out = exported
    from_workdir = Predictor.from_workdir(workdir).predict_arrays(TEXTS)
    from_export = Predictor.from_export(out).predict_arrays(TEXTS)
    assert set(from_workdir) == set(from_export)
    for name in from_workdir:
        np.testing.assert_allclose(from_export[name], from_workdir[name], atol=1e-5, rtol=0)


def test_load_export_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="heads.json"):
        export.load_export(tmp_path)
