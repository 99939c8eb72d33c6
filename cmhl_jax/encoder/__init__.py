"""BERT/RoBERTa encoder in Flax NNX with Hugging Face checkpoint import/export."""

from cmhl_jax.encoder.hub import load_encoder, random_encoder
from cmhl_jax.encoder.modeling import Encoder, EncoderConfig
from cmhl_jax.encoder.params import WeightsMismatchError, load_hf_state, save_pretrained

__all__ = [
    "WeightsMismatchError",
    "Encoder",
    "EncoderConfig",
    "load_encoder",
    "load_hf_state",
    "random_encoder",
    "save_pretrained",
]
