"""Every config file loads and validates; the tests' tiny encoder is the tiny preset's."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, TINY_ENCODER, TINY_PRESET, tiny_config

from cmhl_jax.config import load_config, validate_config

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_file_loads_and_validates(path):
    validate_config(load_config(path))


def test_tiny_preset_runs_on_the_tiny_encoder_and_data(tiny_encoder_dir, tiny_emotion_data):
    assert TINY_PRESET in CONFIGS
    hf_config = json.loads((tiny_encoder_dir / "config.json").read_text())
    assert {key: hf_config[key] for key in TINY_ENCODER} == TINY_ENCODER
    config = tiny_config(tiny_encoder_dir, tiny_emotion_data, "max_steps=2")
    validate_config(config)
    assert config.model.encoder == str(tiny_encoder_dir) and config.max_steps == 2
    assert config.data.local_dir == str(tiny_emotion_data)
