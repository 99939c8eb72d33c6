"""Classifier heads: pure functions of (params, hidden) (CMHL_SPEC 1.2).

Each head is one linear map of the first-token hidden state h; dropout is applied to h once,
shared by all heads, as in Hugging Face sequence classifiers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmhl_jax.encoder.modeling import dropout


def init_heads(key: jax.Array, hidden_size: int, head_sizes: dict[str, int]) -> dict:
    """Linear heads initialised like BERT classifiers: N(0, 0.02) kernels, zero biases."""
    keys = jax.random.split(key, len(head_sizes))
    return {
        name: {
            "kernel": 0.02 * jax.random.normal(k, (hidden_size, size), jnp.float32),
            "bias": jnp.zeros((size,), jnp.float32),
        }
        for k, (name, size) in zip(keys, sorted(head_sizes.items()), strict=True)
    }


def apply_heads(
    params: dict, hidden: jax.Array, *, dropout_rate: float = 0.0, rng: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Logits of every head, in float32, for first-token states `hidden` [..., H]."""
    h = dropout(hidden, dropout_rate, rng).astype(jnp.float32)
    return {name: h @ p["kernel"] + p["bias"] for name, p in params.items()}
