"""cmhl-jax: CMHL multi-head emotion and mental-health classifiers in JAX / Flax NNX."""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"


class _NoTorchNotice(logging.Filter):
    """Drops transformers' import-time "PyTorch was not found" notice: cmhl-jax runs its models
    in JAX and uses transformers for tokenizers and configs only, which need no PyTorch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PyTorch was not found")


# On the "transformers" logger itself (the notice is logged there when transformers is first
# imported, which is after this); other transformers messages are untouched.
if not any(isinstance(f, _NoTorchNotice) for f in logging.getLogger("transformers").filters):
    logging.getLogger("transformers").addFilter(_NoTorchNotice())

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
