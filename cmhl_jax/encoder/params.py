"""Hugging Face checkpoint <-> NNX parameter mapping, checkpoint reading and export."""

from __future__ import annotations

import json
import os
import re
import weakref
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from cmhl_jax.encoder.modeling import Encoder, EncoderConfig
from cmhl_jax.errors import UserError

_LAYER = r"encoder\.layer\.(\d+)\."
# HF key (after the optional model prefix) -> NNX path, per model type. "(\d+)" is the layer
# index. Linear weights are torch [out, in] and become NNX kernels [in, out] (transposed).
_EMBEDDINGS: tuple[tuple[str, str], ...] = (
    (r"embeddings\.word_embeddings\.weight", "embeddings.word_embeddings.embedding"),
    (r"embeddings\.position_embeddings\.weight", "embeddings.position_embeddings.embedding"),
    (r"embeddings\.LayerNorm\.weight", "embeddings.layer_norm.scale"),
    (r"embeddings\.LayerNorm\.bias", "embeddings.layer_norm.bias"),
)
# The feed-forward half of a layer (same names in BERT, RoBERTa and MPNet).
_FFN: tuple[tuple[str, str], ...] = (
    (_LAYER + r"intermediate\.dense\.weight", r"layers.\1.intermediate.kernel"),
    (_LAYER + r"intermediate\.dense\.bias", r"layers.\1.intermediate.bias"),
    (_LAYER + r"output\.dense\.weight", r"layers.\1.output.kernel"),
    (_LAYER + r"output\.dense\.bias", r"layers.\1.output.bias"),
    (_LAYER + r"output\.LayerNorm\.weight", r"layers.\1.output_norm.scale"),
    (_LAYER + r"output\.LayerNorm\.bias", r"layers.\1.output_norm.bias"),
)
_BERT_TABLE: tuple[tuple[str, str], ...] = (
    *_EMBEDDINGS,
    (r"embeddings\.token_type_embeddings\.weight", "embeddings.token_type_embeddings.embedding"),
    (_LAYER + r"attention\.self\.query\.weight", r"layers.\1.attention.query.kernel"),
    (_LAYER + r"attention\.self\.query\.bias", r"layers.\1.attention.query.bias"),
    (_LAYER + r"attention\.self\.key\.weight", r"layers.\1.attention.key.kernel"),
    (_LAYER + r"attention\.self\.key\.bias", r"layers.\1.attention.key.bias"),
    (_LAYER + r"attention\.self\.value\.weight", r"layers.\1.attention.value.kernel"),
    (_LAYER + r"attention\.self\.value\.bias", r"layers.\1.attention.value.bias"),
    (_LAYER + r"attention\.output\.dense\.weight", r"layers.\1.attention.output.kernel"),
    (_LAYER + r"attention\.output\.dense\.bias", r"layers.\1.attention.output.bias"),
    (_LAYER + r"attention\.output\.LayerNorm\.weight", r"layers.\1.attention_norm.scale"),
    (_LAYER + r"attention\.output\.LayerNorm\.bias", r"layers.\1.attention_norm.bias"),
    *_FFN,
)
# MPNet: no token types; attention "attn.q/k/v/o"; one relative position bias table
# [buckets, heads] shared by all layers.
_MPNET_TABLE: tuple[tuple[str, str], ...] = (
    *_EMBEDDINGS,
    (_LAYER + r"attention\.attn\.q\.weight", r"layers.\1.attention.query.kernel"),
    (_LAYER + r"attention\.attn\.q\.bias", r"layers.\1.attention.query.bias"),
    (_LAYER + r"attention\.attn\.k\.weight", r"layers.\1.attention.key.kernel"),
    (_LAYER + r"attention\.attn\.k\.bias", r"layers.\1.attention.key.bias"),
    (_LAYER + r"attention\.attn\.v\.weight", r"layers.\1.attention.value.kernel"),
    (_LAYER + r"attention\.attn\.v\.bias", r"layers.\1.attention.value.bias"),
    (_LAYER + r"attention\.attn\.o\.weight", r"layers.\1.attention.output.kernel"),
    (_LAYER + r"attention\.attn\.o\.bias", r"layers.\1.attention.output.bias"),
    (_LAYER + r"attention\.LayerNorm\.weight", r"layers.\1.attention_norm.scale"),
    (_LAYER + r"attention\.LayerNorm\.bias", r"layers.\1.attention_norm.bias"),
    *_FFN,
    (r"encoder\.relative_attention_bias\.weight", "relative_attention_bias.embedding"),
)
_TABLES = {"bert": _BERT_TABLE, "roberta": _BERT_TABLE, "mpnet": _MPNET_TABLE}
# Model prefixes of task checkpoints (BertForMaskedLM, RobertaForSequenceClassification, ...).
_PREFIX = r"(?:bert\.|roberta\.|mpnet\.)?"
# Legacy TF-era LayerNorm names.
_LEGACY = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))
# Not encoder weights: pooler (kept aside for export), buffers, task heads.
_IGNORED_PREFIXES = (
    "pooler.",
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "cls.",
    "lm_head.",
    "classifier.",
)
_POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")
_COMPILED = {
    model_type: tuple((re.compile(_PREFIX + hf), nnx_path) for hf, nnx_path in table)
    for model_type, table in _TABLES.items()
}

# Pooler weights of loaded checkpoints, re-exported by save_pretrained (unused by the encoder).
_POOLERS: weakref.WeakKeyDictionary[Encoder, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


class WeightsMismatchError(UserError, ValueError):
    """The weights folder does not match the model: its tensors do not fit the encoder's
    parameters (missing, unexpected or of another shape)."""


def _strip_prefix(key: str) -> str:
    return re.sub(r"^" + _PREFIX, "", key)


def _nnx_path(hf_key: str, model_type: str) -> str | None:
    for pattern, template in _COMPILED[model_type]:
        if match := pattern.fullmatch(hf_key):
            return match.expand(template)
    return None


def _params(encoder: Encoder) -> dict[str, nnx.Param]:
    state = nnx.state(encoder, nnx.Param)
    return {".".join(map(str, path)): var for path, var in nnx.to_flat_state(state)}


def load_hf_state(
    encoder: Encoder, state_dict: dict[str, np.ndarray], *, source: str = "state_dict"
) -> Encoder:
    """Fills ``encoder``'s params from HF tensors; raises one error listing every mismatch.

    ``encoder`` may be abstract (`abstract_encoder`): every param is replaced, none is read.
    """
    params = _params(encoder)
    problems, seen, pooler = [], set(), {}
    for key, value in state_dict.items():
        name = key
        for pattern, repl in _LEGACY:
            name = re.sub(pattern, repl, name)
        stripped = _strip_prefix(name)
        if stripped in _POOLER_KEYS:
            pooler[stripped] = np.asarray(value, np.float32)
        if stripped.startswith(_IGNORED_PREFIXES):
            continue
        path = _nnx_path(name, encoder.config.model_type)
        if path not in params:
            problems.append(f"unexpected checkpoint key {key!r}")
            continue
        seen.add(path)
        value = np.asarray(value, np.float32)
        if path.endswith(".kernel"):
            value = value.T
        if value.shape != params[path].shape:
            problems.append(
                f"shape mismatch for {key!r} -> {path}: checkpoint {tuple(value.shape)} "
                f"(after transpose), model {tuple(params[path].shape)}"
            )
            continue
        params[path].set_value(jnp.asarray(value))
    problems += [f"missing checkpoint tensor for {path}" for path in params if path not in seen]
    if problems:
        raise WeightsMismatchError(
            f"checkpoint {source} does not match the {encoder.config.model_type} encoder "
            f"({len(problems)} problems):\n  " + "\n  ".join(problems)
        )
    if len(pooler) == len(_POOLER_KEYS):
        _POOLERS[encoder] = pooler
    return encoder


def read_state_dict(model_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Reads the weights of an HF model dir; returns (tensors, file name for messages)."""
    model_dir = Path(model_dir)
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    torch_bin = model_dir / "pytorch_model.bin"
    if single.exists() or index.exists():
        if single.exists():
            return load_file(single), str(single)
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(load_file(model_dir / shard))
        return tensors, str(index)
    if torch_bin.exists():
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{torch_bin} is a PyTorch checkpoint: install torch to read it, "
                "or convert it to model.safetensors"
            ) from e
        # The one torch.load (banned elsewhere): weights_only=True unpickles tensors only.
        state = torch.load(torch_bin, map_location="cpu", weights_only=True)  # noqa: TID251
        return {k: v.float().numpy() for k, v in state.items()}, str(torch_bin)
    raise FileNotFoundError(
        f"no weights in {model_dir}: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin"
    )


# transformers' BertConfig / RobertaConfig / MPNetConfig defaults: `save_pretrained` omits
# fields equal to them.
HF_CONFIG_DEFAULTS = {
    "bert": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    },
}
HF_CONFIG_DEFAULTS["roberta"] = HF_CONFIG_DEFAULTS["bert"] | {
    "vocab_size": 50265,
    "pad_token_id": 1,
}
HF_CONFIG_DEFAULTS["mpnet"] = {
    k: v for k, v in HF_CONFIG_DEFAULTS["bert"].items() if k != "type_vocab_size"
} | {"vocab_size": 30527, "pad_token_id": 1, "relative_attention_num_buckets": 32}


def read_config(model_dir: str | os.PathLike) -> EncoderConfig:
    """Reads ``config.json`` with transformers' defaults for the fields it omits.

    Plain JSON, not ``transformers.AutoConfig``: that imports torch, which costs memory for nothing.
    """
    path = Path(model_dir) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no config.json in {model_dir}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(hf).__name__}")
    try:
        return EncoderConfig.from_hf(HF_CONFIG_DEFAULTS.get(hf.get("model_type"), {}) | hf)
    except ValueError as e:  # unsupported model type, activation, head count
        raise ValueError(f"{path}: {e}") from None


def _hf_tensors(encoder: Encoder) -> dict[str, np.ndarray]:
    params = _params(encoder)
    tensors = {}
    for hf, nnx_path in _TABLES[encoder.config.model_type]:
        layers = range(encoder.config.num_hidden_layers) if "(\\d+)" in hf else [None]
        for i in layers:
            key = hf.replace("(\\d+)", str(i)).replace("\\.", ".")
            value = np.asarray(params[nnx_path.replace("\\1", str(i))][...])
            tensors[key] = np.ascontiguousarray(value.T if nnx_path.endswith(".kernel") else value)
    h = encoder.config.hidden_size
    pooler = _POOLERS.get(encoder) or {
        "pooler.dense.weight": np.eye(h, dtype=np.float32),
        "pooler.dense.bias": np.zeros(h, np.float32),
    }
    return tensors | pooler


def save_pretrained(encoder: Encoder, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Writes an HF model dir that ``transformers.AutoModel`` loads with no missing keys.

    The pooler (unused here) is the checkpoint's when this encoder object was loaded with one,
    else identity weights and zero bias. ``tokenizer`` may be None.
    """
    import transformers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf = encoder.config.to_hf_dict()
    transformers.AutoConfig.for_model(hf.pop("model_type"), **hf).save_pretrained(out_dir)
    save_file(_hf_tensors(encoder), out_dir / "model.safetensors", metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
