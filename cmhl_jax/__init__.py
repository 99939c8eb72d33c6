"""cmhl-jax: CMHL multi-head emotion and mental-health classifiers in JAX / Flax NNX."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names, imported on first use so that `import cmhl_jax` stays cheap.
_EXPORTS = {
    "load_encoder": "cmhl_jax.encoder",
    "save_pretrained": "cmhl_jax.encoder",
    "Encoder": "cmhl_jax.encoder",
    "EncoderConfig": "cmhl_jax.encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cmhl_jax' has no attribute {name!r}")
