"""BERT / RoBERTa / MPNet encoder in Flax NNX, with sequence packing and row-selective last
layer."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "mpnet")
_INIT = nnx.initializers.normal(0.02)  # BERT's initializer_range
_ARCHITECTURES = {"bert": "BertModel", "roberta": "RobertaModel", "mpnet": "MPNetModel"}
# Model types whose positions start at pad_token_id + 1 (fairseq style).
_PAD_OFFSET_POSITIONS = ("roberta", "mpnet")
# MPNet's relative position buckets: transformers' MPNetEncoder always buckets with its
# defaults (num_buckets=32, max_distance=128), whatever relative_attention_num_buckets says.
MPNET_NUM_BUCKETS = 32
MPNET_MAX_DISTANCE = 128


def _check_model_type(model_type: str | None) -> None:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of a post-LayerNorm BERT/RoBERTa/MPNet encoder (HF field names).

    MPNet has no token types: its ``type_vocab_size`` is always 0. Its relative attention
    bias has ``MPNET_NUM_BUCKETS`` buckets (the only count transformers' MPNet computes), so
    the field ``relative_attention_num_buckets`` is checked by `from_hf`, not stored (a new
    field would change the fingerprint of every existing checkpoint).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        _check_model_type(self.model_type)
        if self.model_type == "mpnet":
            object.__setattr__(self, "type_vocab_size", 0)
        if self.hidden_act != "gelu":
            raise ValueError(
                f"unsupported hidden_act {self.hidden_act!r}; only 'gelu' (exact erf) is supported"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf_config: Any) -> EncoderConfig:
        """Builds a config from a transformers ``PretrainedConfig`` or its dict."""
        d = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
        _check_model_type(d.get("model_type"))
        position_type = d.get("position_embedding_type") or "absolute"
        if position_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {position_type!r}")
        buckets = d.get("relative_attention_num_buckets", MPNET_NUM_BUCKETS)
        if d["model_type"] == "mpnet" and buckets != MPNET_NUM_BUCKETS:
            raise ValueError(
                f"unsupported relative_attention_num_buckets {buckets!r}; "
                f"MPNet supports {MPNET_NUM_BUCKETS}"
            )
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers config dict of the matching ``AutoModel`` class."""
        d = {**dataclasses.asdict(self), "architectures": [_ARCHITECTURES[self.model_type]]}
        if self.model_type == "mpnet":
            del d["type_vocab_size"]
            return d | {"relative_attention_num_buckets": MPNET_NUM_BUCKETS}
        return d | {"position_embedding_type": "absolute"}


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection in which every input bit flips about
    half of the output bits."""
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def random_words(key: jax.Array, n: int) -> jax.Array:
    """``n`` pseudo-random uint32 words: two rounds of ``_fmix32`` over the counters 0..n-1,
    keyed by the two words of ``key`` (uint32[2], from threefry).

    For dropout masks, not cryptography: far cheaper on CPU than ``jax.random.bits``
    (threefry's 20 rounds run as a while loop of small ops there; measured in
    docs/benchmarks.md).
    """
    counters = jnp.arange(n, dtype=jnp.uint32)
    return _fmix32(_fmix32(counters ^ key[0]) ^ key[1])


def dropout_keys(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32[*shape, 2] dropout keys, one per site, from one threefry call."""
    return jax.random.bits(rng, (*shape, 2), jnp.uint32)


def keyed_dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout with a ``dropout_keys`` key (uint32[2]).

    The keep mask uses 8 random bits per element: one 32-bit word (``random_words``) gives
    the bytes of four elements, and an element is dropped iff its byte is below
    ``round(256 * rate)``. The drop probability is ``rate`` rounded to a multiple of 1/256
    (0.1 -> 0.1016); kept values are scaled by the exact inverse keep probability, so the
    expectation is unchanged.
    """
    if rate == 0.0:
        return x
    threshold = round(256 * rate)
    if threshold >= 256:
        return jnp.zeros_like(x)
    n = x.size
    words = random_words(key, -(-n // 4))
    draws = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:n].reshape(x.shape)
    keep = draws >= jnp.uint8(threshold)
    return jnp.where(keep, x * (256 / (256 - threshold)), 0).astype(x.dtype)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout (``keyed_dropout``) with a JAX PRNG key; identity when ``rng`` is None
    (eval mode) or ``rate`` is 0."""
    if rng is None or rate == 0.0:
        return x
    return keyed_dropout(x, rate, dropout_keys(rng, ()))


def _dropout(x: jax.Array, rate: float, keys: jax.Array | None, site: int) -> jax.Array:
    """Dropout at one of a layer's sites; ``keys`` [sites, 2] or None (eval mode)."""
    return x if keys is None else keyed_dropout(x, rate, keys[site])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def mixed_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``einsum(spec, a, b)`` with bfloat16 operands and float32 accumulation and result, in
    the forward pass and in both gradient products of the backward pass.

    XLA:CPU runs a dot only in this form (bf16 x bf16 -> f32) on its AVX512_BF16 / AMX
    kernels (their speed against float32: docs/benchmarks.md); a plain
    bfloat16 dot, and the mixed f32 x bf16 dots autodiff would emit, are rewritten to float32.
    ``spec`` is "X,Y->Z" where every index appears in exactly two of X, Y, Z or in all three
    (a batch index); ``a`` and ``b`` are float32. The operands are saved as bfloat16.
    """
    return _mixed_forward(spec, a, b)[0]


def _bf16_dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _mixed_forward(spec, a, b):
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    return _bf16_dot(spec, a16, b16), (a16, b16)


def _mixed_backward(spec, saved, g):
    a16, b16 = saved
    inputs, z = spec.split("->")
    x, y = inputs.split(",")
    g16 = g.astype(jnp.bfloat16)
    return _bf16_dot(f"{z},{y}->{x}", g16, b16), _bf16_dot(f"{x},{z}->{y}", a16, g16)


mixed_einsum.defvjp(_mixed_forward, _mixed_backward)


def einsum(spec: str, a: jax.Array, b: jax.Array, matmul_dtype=None) -> jax.Array:
    """``jnp.einsum``, or `mixed_einsum` when ``matmul_dtype`` is bfloat16 (operands in
    bfloat16, accumulation and result in float32)."""
    if matmul_dtype is None or jnp.dtype(matmul_dtype) != jnp.bfloat16:
        return jnp.einsum(spec, a, b)
    return mixed_einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))


def _dense(linear: nnx.Linear, x: jax.Array, matmul_dtype) -> jax.Array:
    """``linear(x)``, with its matmul in ``matmul_dtype`` (see `einsum`) when one is set."""
    if matmul_dtype is None:
        return linear(x)
    kernel, bias = (p[...].astype(linear.dtype) for p in (linear.kernel, linear.bias))
    return einsum("bli,io->blo", x, kernel, matmul_dtype).astype(linear.dtype) + bias


def _linear(n_in: int, n_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        n_in, n_out, dtype=dtype, param_dtype=jnp.float32, kernel_init=_INIT, rngs=rngs
    )


def _layer_norm(cfg: EncoderConfig, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


def _embed(n: int, cfg: EncoderConfig, dtype, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        n, cfg.hidden_size, dtype=dtype, param_dtype=jnp.float32, embedding_init=_INIT, rngs=rngs
    )


def position_ids(segment_ids: jax.Array, model_type: str, pad_token_id: int) -> jax.Array:
    """Per-segment positions; RoBERTa's and MPNet's are offset by ``pad_token_id + 1``
    (padding: pad id)."""
    idx = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)
    change = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
        axis=1,
    )
    start = jax.lax.cummax(jnp.where(change, idx, 0), axis=1)
    pos = idx - start
    if model_type in _PAD_OFFSET_POSITIONS:
        pos = jnp.where(segment_ids != 0, pos + pad_token_id + 1, pad_token_id)
    return pos


def attention_bias(q_segments: jax.Array, k_segments: jax.Array, dtype) -> jax.Array:
    """Additive [B, 1, Q, K] bias: 0 where segments match and the key is not padding."""
    allowed = (q_segments[:, :, None] == k_segments[:, None, :]) & (k_segments[:, None, :] != 0)
    return jnp.where(allowed, 0, jnp.finfo(dtype).min).astype(dtype)[:, None]


def relative_position_buckets(relative_position: np.ndarray) -> np.ndarray:
    """transformers' ``MPNetEncoder.relative_position_bucket`` (T5's bidirectional buckets,
    32 buckets, max distance 128) in numpy, with the same float32 arithmetic.

    Computed on the host for the static range of distances: the buckets are integers cut at
    float boundaries (distance 16 is exactly bucket 10), which a device's own ``log`` could
    round to the other side.
    """
    n = -np.asarray(relative_position, np.int64)
    half = MPNET_NUM_BUCKETS // 2
    max_exact = half // 2
    ret = np.where(n < 0, half, 0)
    n = np.abs(n)
    scale = np.float32(math.log(MPNET_MAX_DISTANCE / max_exact))
    ratio = np.maximum(n, 1).astype(np.float32) / np.float32(max_exact)
    large = max_exact + (np.log(ratio) / scale * np.float32(half - max_exact)).astype(np.int64)
    return ret + np.where(n < max_exact, n, np.minimum(large, half - 1))


def relative_position_bias(table: jax.Array, segment_ids: jax.Array, dtype) -> jax.Array:
    """MPNet's [B, heads, L, L] attention bias ``table[bucket(pos[k] - pos[q])]``.

    ``pos`` restarts at 0 in every segment, so a packed text sees the distances it has when
    encoded alone (pairs across segments are masked by `attention_bias`).
    """
    length = segment_ids.shape[1]
    pos = position_ids(segment_ids, "bert", 0)
    buckets = jnp.asarray(relative_position_buckets(np.arange(-length + 1, length)), jnp.int32)
    relative = pos[:, None, :] - pos[:, :, None]  # [B, Q, K]: key minus query
    values = table[...].astype(dtype)[buckets[relative + length - 1]]  # [B, Q, K, heads]
    return jnp.transpose(values, (0, 3, 1, 2))


class Embeddings(nnx.Module):
    """Word + position (+ token-type, except MPNet) embeddings, LayerNorm."""

    def __init__(self, cfg: EncoderConfig, dtype, rngs: nnx.Rngs):
        self.word_embeddings = _embed(cfg.vocab_size, cfg, dtype, rngs)
        self.position_embeddings = _embed(cfg.max_position_embeddings, cfg, dtype, rngs)
        if cfg.model_type != "mpnet":
            self.token_type_embeddings = _embed(cfg.type_vocab_size, cfg, dtype, rngs)
        self.layer_norm = _layer_norm(cfg, dtype, rngs)

    def __call__(self, input_ids, positions, token_type_ids):
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.layer_norm(x)


class SelfAttention(nnx.Module):
    """Multi-head self-attention in [B, heads, L, D] layout, with output projection."""

    def __init__(self, cfg: EncoderConfig, dtype, matmul_dtype, rngs: nnx.Rngs):
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.dtype = dtype
        self.matmul_dtype = matmul_dtype
        h = cfg.hidden_size
        self.query = _linear(h, h, dtype, rngs)
        self.key = _linear(h, h, dtype, rngs)
        self.value = _linear(h, h, dtype, rngs)
        self.output = _linear(h, h, dtype, rngs)

    def _heads(self, proj: nnx.Linear, x: jax.Array) -> jax.Array:
        kernel = proj.kernel[...].astype(self.dtype).reshape(-1, self.num_heads, self.head_dim)
        bias = proj.bias[...].astype(self.dtype).reshape(self.num_heads, 1, self.head_dim)
        return self._einsum("blh,hnd->bnld", x, kernel) + bias

    def _einsum(self, spec, a, b):
        return einsum(spec, a, b, self.matmul_dtype).astype(self.dtype)

    def __call__(self, x_q, x_kv, bias, keys, dropout_rate):
        q = self._heads(self.query, x_q) * jnp.asarray(self.head_dim**-0.5, self.dtype)
        k = self._heads(self.key, x_kv)
        v = self._heads(self.value, x_kv)
        scores = jnp.einsum("bnqd,bnkd->bnqk", q, k) + bias  # small (L x L); stays in dtype
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        probs = _dropout(probs, dropout_rate, keys, 0)
        ctx = jnp.einsum("bnqk,bnkd->bnqd", probs, v)
        out = self.output.kernel[...].astype(self.dtype)
        out = out.reshape(self.num_heads, self.head_dim, -1)
        return self._einsum("bnqd,ndh->bqh", ctx, out) + self.output.bias[...].astype(self.dtype)


@jax.custom_vjp
def gelu(z: jax.Array) -> jax.Array:
    """Exact (erf) GELU whose backward pass multiplies by a derivative saved in the forward.

    Same values as ``jax.nn.gelu(z, approximate=False)`` and the same gradient. The forward
    computes the derivative next to the activation and the backward is one multiply, so erf
    and exp are not recomputed inside the backward matmul's fusion.
    """
    return _gelu_forward(z)[0]


def _gelu_forward(z):
    cdf = 0.5 * (1.0 + jax.lax.erf(z * np.float32(2**-0.5)))
    pdf = jnp.exp(-0.5 * z * z) * np.float32((2 * np.pi) ** -0.5)
    return (z * cdf).astype(z.dtype), (cdf + z * pdf).astype(z.dtype)


gelu.defvjp(_gelu_forward, lambda derivative, g: (g * derivative,))


class Layer(nnx.Module):
    """Post-LayerNorm transformer layer (attention, then GELU feed-forward)."""

    def __init__(self, cfg: EncoderConfig, dtype, matmul_dtype, rngs: nnx.Rngs):
        self.matmul_dtype = matmul_dtype
        self.attention = SelfAttention(cfg, dtype, matmul_dtype, rngs)
        self.attention_norm = _layer_norm(cfg, dtype, rngs)
        self.intermediate = _linear(cfg.hidden_size, cfg.intermediate_size, dtype, rngs)
        self.output = _linear(cfg.intermediate_size, cfg.hidden_size, dtype, rngs)
        self.output_norm = _layer_norm(cfg, dtype, rngs)

    def __call__(self, x_q, x_kv, bias, keys, cfg: EncoderConfig):
        """Queries/residual from ``x_q`` [B, Q, H], keys/values from ``x_kv`` [B, L, H]."""
        attn = self.attention(x_q, x_kv, bias, keys, cfg.attention_probs_dropout_prob)
        h = self.attention_norm(x_q + _dropout(attn, cfg.hidden_dropout_prob, keys, 1))
        inner = gelu(_dense(self.intermediate, h, self.matmul_dtype))
        ffn = _dense(self.output, inner, self.matmul_dtype)
        return self.output_norm(h + _dropout(ffn, cfg.hidden_dropout_prob, keys, 2))


class Encoder(nnx.Module):
    """BERT/RoBERTa/MPNet encoder returning the last hidden state; params float32, compute
    ``dtype``.

    ``matmul_dtype=jnp.bfloat16`` (with ``dtype`` float32) runs the layers' weight matmuls (the
    four attention projections and the feed-forward pair, most of the FLOPs) with
    bfloat16 operands and float32 accumulation and results (`mixed_einsum`); everything else
    (embeddings, attention scores, LayerNorm, softmax, GELU, residuals) stays float32.

    MPNet adds one relative position bias table [buckets, heads], shared by all layers: its
    bias is computed once per call and added to every layer's attention scores.
    """

    def __init__(
        self, config: EncoderConfig, *, dtype=jnp.float32, matmul_dtype=None, rngs: nnx.Rngs
    ):
        self.config = config
        self.dtype = dtype
        self.matmul_dtype = matmul_dtype
        self.embeddings = Embeddings(config, dtype, rngs)
        self.layers = nnx.List(
            [Layer(config, dtype, matmul_dtype, rngs) for _ in range(config.num_hidden_layers)]
        )
        if config.model_type == "mpnet":
            self.relative_attention_bias = nnx.Embed(
                MPNET_NUM_BUCKETS,
                config.num_attention_heads,
                dtype=dtype,
                param_dtype=jnp.float32,
                embedding_init=_INIT,
                rngs=rngs,
            )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        token_type_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        output_rows: jax.Array | None = None,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """Encodes int32 [B, L] ids; returns [B, L, H], or [B, R, H] for ``output_rows`` [B, R].

        ``segment_ids`` (0 = padding, k = k-th packed text) overrides ``attention_mask``; tokens
        attend only within their own segment. Dropout is on iff ``dropout_rng`` is given.
        MPNet has no token types: ``token_type_ids`` must be None.
        """
        cfg = self.config
        if segment_ids is None:
            segment_ids = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
        if cfg.model_type == "mpnet":
            if token_type_ids is not None:
                raise ValueError("MPNet has no token types; token_type_ids must be None")
        elif token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        positions = position_ids(segment_ids, cfg.model_type, cfg.pad_token_id)
        x = self.embeddings(input_ids, positions, token_type_ids).astype(self.dtype)
        # Keys of every dropout site: [layer, site, 2]; the embeddings use the extra row.
        keys = None
        if dropout_rng is not None:
            keys = dropout_keys(dropout_rng, (len(self.layers) + 1, 3))
        x = _dropout(x, cfg.hidden_dropout_prob, None if keys is None else keys[-1], 0)
        bias = attention_bias(segment_ids, segment_ids, self.dtype)
        if cfg.model_type == "mpnet":
            bias = bias + relative_position_bias(
                self.relative_attention_bias.embedding, segment_ids, self.dtype
            )
        for i, layer in enumerate(self.layers):
            layer_keys = None if keys is None else keys[i]
            if output_rows is not None and i == len(self.layers) - 1:
                rows = output_rows.astype(jnp.int32)
                x_rows = jnp.take_along_axis(x, rows[:, :, None], axis=1)
                row_bias = jnp.take_along_axis(bias, rows[:, None, :, None], axis=2)
                return layer(x_rows, x, row_bias, layer_keys, cfg)
            x = layer(x, x, bias, layer_keys, cfg)
        return x
