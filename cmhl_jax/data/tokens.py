"""Tokenisation: token ids per text, computed once and cached in memory and on disk."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmhl_jax.data.sources import Examples

_TOKEN_CACHE_VERSION = b"cmhl-tokens-v1"
_MEMORY_CACHE_SIZE = 8
_memory_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def _cache_key(texts: Sequence[str], tokenizer, max_length: int, truncation: str) -> str:
    """Hash of everything the ids depend on: tokenizer, length limit, truncation and texts."""
    digest = hashlib.sha256(_TOKEN_CACHE_VERSION)
    header = f"{tokenizer.name_or_path}\0{len(tokenizer)}\0{max_length}\0{truncation}\0{len(texts)}"
    digest.update(header.encode())
    for text in texts:
        encoded = text.encode("utf-8", errors="surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def _special_token_counts(tokenizer) -> tuple[int, int]:
    """Number of special tokens the tokenizer puts before and after a single text's content."""
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return start, len(full) - start - len(content)
    raise ValueError(f"cannot locate the content tokens inside {full} for head_tail truncation")


def _encode_head(texts: Sequence[str], tokenizer, max_length: int) -> list[list[int]]:
    """Ids with special tokens, cut to the first ``max_length`` by the tokenizer itself."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, **_ENCODE_OPTIONS)[
        "input_ids"
    ]


def _encode_head_tail(texts: Sequence[str], tokenizer, max_length: int) -> list[list[int]]:
    """Ids with special tokens; a long text keeps the first and last halves of its content."""
    before, after = _special_token_counts(tokenizer)
    budget = max_length - before - after
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for head_tail content")
    head, tail = budget - budget // 2, budget // 2
    encoded = tokenizer(list(texts), truncation=False, **_ENCODE_OPTIONS)["input_ids"]
    return [
        ids if len(ids) <= max_length else ids[: before + head] + ids[len(ids) - after - tail :]
        for ids in encoded
    ]


_ENCODE_OPTIONS = dict(return_attention_mask=False, return_token_type_ids=False, verbose=False)
# Truncation names; data.truncation is validated against these by tasks.validate_config.
_ENCODERS = {"head": _encode_head, "head_tail": _encode_head_tail}


def tokenize(
    texts: Sequence[str],
    tokenizer,
    max_length: int,
    *,
    truncation: str = "head",
    cache_dir: str | os.PathLike | None = None,
) -> list[np.ndarray]:
    """Token ids (int32, with special tokens, unpadded) per text; cached in memory and on disk.

    ``truncation="head"`` keeps the first tokens; ``"head_tail"`` keeps the first half and the
    last half of the content tokens (the head gets the odd one). Returned arrays are read-only.
    """
    key = _cache_key(texts, tokenizer, max_length, truncation)
    cache_file = Path(cache_dir) / f"tokens-{key}.npz" if cache_dir is not None else None
    if key in _memory_cache:
        _memory_cache.move_to_end(key)
        ids, offsets = _memory_cache[key]
    elif cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as stored:
            ids, offsets = stored["ids"], stored["offsets"]
    else:
        encoded = _ENCODERS[truncation](texts, tokenizer, max_length)
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(row) for row in encoded], out=offsets[1:])
        ids = np.fromiter((t for row in encoded for t in row), np.int32, count=int(offsets[-1]))
        if cache_file is not None:
            _write_npz_atomically(cache_file, ids=ids, offsets=offsets)
    ids.flags.writeable = False
    _memory_cache[key] = (ids, offsets)
    while len(_memory_cache) > _MEMORY_CACHE_SIZE:
        _memory_cache.popitem(last=False)
    return [ids[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def tokenize_split(examples: Examples, tokenizer, data_cfg, cache_dir) -> list[np.ndarray]:
    """`tokenize` with the config's max_length and truncation."""
    return tokenize(
        examples.texts,
        tokenizer,
        data_cfg.max_length,
        truncation=data_cfg.truncation,
        cache_dir=cache_dir,
    )


def _write_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write through a temporary file and rename, so a crash never leaves a torn cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(buffer.getvalue())
    os.replace(handle.name, path)
