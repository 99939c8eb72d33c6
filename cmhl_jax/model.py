"""The CMHL model: an NNX encoder split once into (graphdef, params) plus pure heads.

The trainable state is one pytree of plain dicts, `{"encoder": ..., "heads": ...}`; the
encoder's graph definition is static. `forward` is a pure function of (params, batch, rng).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from cmhl_jax.encoder import EncoderConfig, load_encoder
from cmhl_jax.tasks import Task


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of the model: everything that is not a trained array."""

    graphdef: nnx.GraphDef
    encoder_config: EncoderConfig
    task: Task
    head_dropout: float

    def fingerprint(self) -> dict:
        """What a checkpoint must match to be restored into this model."""
        return {
            "encoder": dataclasses.asdict(self.encoder_config),
            "task": self.task.name,
            "heads": dict(self.task.head_sizes),
        }


def matmul_dtype(model_cfg):
    """The encoder's matmul operand dtype: None (= model.dtype) or bfloat16 (f32 accumulate)."""
    name = model_cfg.get("matmul_dtype") or model_cfg.dtype
    return None if name == model_cfg.dtype else jnp.dtype(name)


def build_model(model_cfg, task: Task, *, seed: int):
    """Loads the encoder named by the config, splits it once and initialises the heads.

    Returns (model_def, params, tokenizer).
    """
    encoder, tokenizer = load_encoder(
        model_cfg.encoder, dtype=jnp.dtype(model_cfg.dtype), matmul_dtype=matmul_dtype(model_cfg)
    )
    overrides = {
        key: model_cfg[key]
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob")
        if model_cfg.get(key) is not None
    }
    if overrides:
        encoder.config = dataclasses.replace(encoder.config, **overrides)
    graphdef, state = nnx.split(encoder, nnx.Param)
    params = {
        "encoder": nnx.to_pure_dict(state),
        "heads": task.init_heads(
            jax.random.fold_in(jax.random.PRNGKey(seed), 1), encoder.config.hidden_size
        ),
    }
    model_def = ModelDef(
        graphdef=graphdef,
        encoder_config=encoder.config,
        task=task,
        head_dropout=float(model_cfg.head_dropout),
    )
    return model_def, params, tokenizer


def forward(model_def: ModelDef, params: dict, batch: dict, rng: jax.Array | None = None):
    """Head outputs [B, R, C] for every text slot of a batch (see `cmhl_jax.data`).

    Train mode iff `rng` is given. The encoder's last layer computes only the rows the heads
    read (`text_rows`: each text's first token).
    """
    encoder_rng = head_rng = None
    if rng is not None:
        encoder_rng, head_rng = jax.random.split(rng)
    encoder = nnx.merge(model_def.graphdef, params["encoder"])
    hidden = encoder(
        batch["input_ids"],
        segment_ids=batch["segment_ids"],
        output_rows=batch["text_rows"],
        dropout_rng=encoder_rng,
    )
    return model_def.task.apply_heads(
        params["heads"], hidden, dropout_rate=model_def.head_dropout, rng=head_rng
    )
