"""Host-side data pipeline: read labelled texts, tokenise once (cached), build static-shape batches.

Batch format (a dict of numpy arrays; B rows of length L, R text slots per row):

- ``input_ids`` [B, L] int32: token ids, padded with the tokenizer's pad id.
- ``segment_ids`` [B, L] int32: 0 on padding, k >= 1 on the tokens of the k-th text of the row
  (unpacked rows hold one text, so 1 on every real token).
- ``text_rows`` [B, R] int32: position in the row of each text's first token ([CLS]); 0 if empty.
- ``labels`` [B, R] int32: class id of each text; 0 if empty.
- ``text_mask`` [B, R] float32: 1 for a real text, 0 for an empty slot or a padding row.
- ``example_index`` [B, R] int32: index of the text in its ``Examples``; -1 if empty.

R is 1 for unpacked batches and ``max_texts_per_row`` whenever ``pack=True``. Losses and metrics
must weight by ``text_mask``: the last, partial batch of each bucket is padded with empty rows,
in training too, so that every example is seen exactly once per epoch (small buckets would
otherwise never be trained on).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_MAX_LINES_IN_MESSAGE = 5
_INT_LABEL = re.compile(r"[0-9]+")


class DataError(ValueError):
    """Malformed input data; the message names the file and the offending lines."""


@dataclass
class Examples:
    """Labelled texts read from one source; ``skipped`` counts bad lines dropped while reading."""

    texts: list[str]
    labels: np.ndarray
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


# ---------------------------------------------------------------------------------------------
# Reading


def _decoded_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """Yield (line number, text with its line ending, decoding problem or None) per physical line.

    Only ``\\n``, ``\\r`` and ``\\r\\n`` end lines; a UTF-8 byte order mark on line 1 is dropped.
    """
    for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        encoding = "utf-8-sig" if number == 1 else "utf-8"
        try:
            yield number, raw.decode(encoding), None
        except UnicodeDecodeError as error:
            reason = f"undecodable bytes (not UTF-8) at byte {error.start} of the line"
            yield number, raw.decode(encoding, errors="replace"), reason


def _txt_records(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """Yield (line, text, label, problem) from a ``text;label`` file, skipping blank lines."""
    for number, line, problem in _decoded_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        text, separator, label = line.rpartition(";")
        if problem is None and not separator:
            problem = "no ';' separating text and label"
        yield number, text, label, problem


def _csv_records(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """Yield (first physical line, text, label, problem) per record of a ``text,label`` CSV."""
    line_problems: dict[int, str] = {}

    def lines() -> Iterator[str]:
        for number, line, problem in _decoded_lines(path):
            if problem is not None:
                line_problems[number] = problem
            yield line

    reader = csv.reader(lines(), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as error:
        raise DataError(f"{path}:1: cannot read the CSV header ({error or 'empty file'})") from None
    if "text" not in header or "label" not in header:
        raise DataError(f"{path}:1: the CSV header needs 'text' and 'label' columns, got {header}")
    text_column, label_column = header.index("text"), header.index("label")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield start, "", "", f"malformed CSV record ({error})"
            continue
        if not row:
            continue
        problem = next(
            (
                line_problems[n] + (f" (line {n})" if n != start else "")
                for n in range(start, reader.line_num + 1)
                if n in line_problems
            ),
            None,
        )
        if problem is None and len(row) != len(header):
            problem = f"expected {len(header)} fields, got {len(row)}"
        if problem is not None:
            yield start, "", "", problem
        else:
            yield start, row[text_column], row[label_column], None


def _label_id(label: str | int, label_names: Sequence[str]) -> int | None:
    """Map a label name or an in-range integer id (int or digit string) to its id, else None."""
    if isinstance(label, str):
        label = label.strip()
        if label in label_names:
            return label_names.index(label)
        if not _INT_LABEL.fullmatch(label):
            return None
    label_id = int(label)
    return label_id if 0 <= label_id < len(label_names) else None


def _collect(
    source: str,
    records: Iterable[tuple[int, str, str | int, str | None]],
    label_names: Sequence[str],
    skip_bad_lines: bool,
    unit: str = "line",
) -> Examples:
    """Validate records into Examples; bad ones raise DataError, or are skipped and counted."""
    texts: list[str] = []
    labels: list[int] = []
    bad: list[tuple[int, str]] = []
    for number, text, label, problem in records:
        text = text.strip()
        label_id = None if problem else _label_id(label, label_names)
        if problem is None and label_id is None:
            known = ", ".join(label_names)
            problem = f"unknown label {label!r} (known: {known}, or ids 0..{len(label_names) - 1})"
        if problem is None and not text:
            problem = "empty text"
        if problem is not None:
            bad.append((number, problem))
            continue
        texts.append(text)
        labels.append(label_id)
    first_bad = "; ".join(f"{unit} {n}: {why}" for n, why in bad[:_MAX_LINES_IN_MESSAGE])
    if bad and not skip_bad_lines:
        hidden = len(bad) - _MAX_LINES_IN_MESSAGE
        more = f" (and {hidden} more)" if hidden > 0 else ""
        raise DataError(
            f"{source}: {len(bad)} bad {unit}(s), pass skip_bad_lines=True to skip them: "
            f"{first_bad}{more}"
        )
    if bad:
        logger.warning("%s: skipped %d bad %s(s); first: %s", source, len(bad), unit, first_bad)
    return Examples(texts, np.asarray(labels, np.int32), source, skipped=len(bad))


def read_examples(
    path: str | os.PathLike, label_names: Sequence[str], *, skip_bad_lines: bool = False
) -> Examples:
    """Read a ``.txt`` (``text;label``, label after the last ``;``) or ``.csv`` (``text,label``)."""
    path = Path(path)
    readers = {".txt": _txt_records, ".csv": _csv_records}
    if path.suffix not in readers:
        raise ValueError(f"{path}: unsupported data file type {path.suffix!r} (.txt or .csv)")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return _collect(str(path), readers[path.suffix](path), list(label_names), skip_bad_lines)


def _load_hf(spec: str, label_names: Sequence[str], skip_bad_lines: bool) -> Examples:
    """Load ``hf:NAME[:CONFIG]:SPLIT`` with ``datasets.load_dataset`` (columns text and label)."""
    parts = spec.removeprefix("hf:").split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"bad dataset spec {spec!r}: expected hf:NAME[:CONFIG]:SPLIT")
    import datasets

    name, config, split = parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]
    dataset = datasets.load_dataset(name, config, split=split)
    class_names = getattr(dataset.features["label"], "names", None)
    if class_names is not None and list(class_names) != list(label_names):
        raise DataError(f"{spec}: dataset label names {class_names} != expected {label_names}")
    records = (
        (row, text, label, None)
        for row, (text, label) in enumerate(zip(dataset["text"], dataset["label"], strict=True))
    )
    return _collect(spec, records, list(label_names), skip_bad_lines, unit="row")


def _load_tfds(spec: str, label_names: Sequence[str], skip_bad_lines: bool) -> Examples:
    """Load ``tfds:NAME[:SPLIT]`` (default split ``train``) with tensorflow-datasets.

    The dataset needs a ``text`` (Text) and a ``label`` (ClassLabel or int) feature. Data
    lives in ``$TFDS_DATA_DIR`` (default ``~/tensorflow_datasets``); an unprepared dataset is
    prepared in the array_record format, which is read without TensorFlow (a dataset already
    prepared as TFRecord needs TensorFlow installed).
    """
    name, _, split = spec.removeprefix("tfds:").partition(":")
    split = split or "train"
    if not name or ":" in split:
        raise ValueError(f"bad dataset spec {spec!r}: expected tfds:NAME[:SPLIT]")
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"{spec} needs tensorflow-datasets: pip install 'cmhl-jax[tfds]'"
        ) from error
    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
    features = builder.info.features
    missing = [key for key in ("text", "label") if key not in features]
    if missing:
        raise DataError(f"{spec}: no feature(s) {missing}; the dataset has {list(features)}")
    class_names = getattr(features["label"], "names", None)
    if class_names is not None and list(class_names) != list(label_names):
        raise DataError(f"{spec}: dataset label names {class_names} != expected {label_names}")
    try:
        rows = builder.as_data_source(split=split)
    except NotImplementedError:  # TFRecord-prepared datasets are read through TensorFlow
        rows = tfds.as_numpy(builder.as_dataset(split=split))

    def text_of(value) -> str:
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    records = (
        (row, text_of(example["text"]), int(example["label"]), None)
        for row, example in enumerate(rows)
    )
    return _collect(spec, records, list(label_names), skip_bad_lines, unit="row")


def load_split(
    spec: str | os.PathLike, label_names: Sequence[str], *, skip_bad_lines: bool = False
) -> Examples:
    """Load a split from a local ``.txt``/``.csv`` file, ``hf:NAME[:CONFIG]:SPLIT`` or
    ``tfds:NAME[:SPLIT]``."""
    if isinstance(spec, str) and spec.startswith("hf:"):
        return _load_hf(spec, label_names, skip_bad_lines)
    if isinstance(spec, str) and spec.startswith("tfds:"):
        return _load_tfds(spec, label_names, skip_bad_lines)
    return read_examples(spec, label_names, skip_bad_lines=skip_bad_lines)


def resolve_split(local_dir: str | os.PathLike, split: str) -> Path:
    """Return ``local_dir/split.txt`` or ``local_dir/split.csv``, whichever exists (not both)."""
    local_dir = Path(local_dir)
    found = [p for p in (local_dir / f"{split}.txt", local_dir / f"{split}.csv") if p.is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"both {found[0]} and {found[1]} exist; keep only one")
    present = sorted(p.name for p in local_dir.iterdir()) if local_dir.is_dir() else None
    where = f"it holds {present}" if present is not None else "the directory does not exist"
    raise FileNotFoundError(f"no {split}.txt or {split}.csv in {local_dir} ({where})")


SPLIT_ALIASES = {"validation": "val", "val": "validation"}


def split_spec(data_cfg, split: str) -> str:
    """Where a split comes from: `<local_dir>/<split>.txt|csv` (local_dir from the config or
    the CMHL_DATA_DIR environment variable; `validation` and `val` are aliases there), else
    `tfds:<data_cfg.tfds_dataset>:<split>` when that is set, else
    `hf:<data_cfg.hf_dataset>:<split>`."""
    local_dir = data_cfg.local_dir or os.environ.get("CMHL_DATA_DIR", "")
    if not local_dir and data_cfg.get("tfds_dataset"):
        return f"tfds:{data_cfg.tfds_dataset}:{split}"
    if not local_dir:
        return f"hf:{data_cfg.hf_dataset}:{split}"
    try:
        return str(resolve_split(local_dir, split))
    except FileNotFoundError:
        if split not in SPLIT_ALIASES:
            raise
        return str(resolve_split(local_dir, SPLIT_ALIASES[split]))


def warn_overlap(train: Examples, other: Examples) -> int:
    """Count texts of ``other`` that also occur in ``train`` (after strip); warn if any."""
    train_texts = {text.strip() for text in train.texts}
    overlap = sum(text.strip() in train_texts for text in other.texts)
    if overlap:
        logger.warning(
            "%d of %d texts in %s also occur in %s", overlap, len(other), other.source, train.source
        )
    return overlap


# ---------------------------------------------------------------------------------------------
# Tokenisation

_TOKEN_CACHE_VERSION = b"cmhl-tokens-v1"
_MEMORY_CACHE_SIZE = 8
_memory_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def _cache_key(texts: Sequence[str], tokenizer, max_length: int, truncation: str) -> str:
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


def _encode(texts: Sequence[str], tokenizer, max_length: int, truncation: str) -> list[list[int]]:
    """Batched tokenizer call: ids with special tokens, at most ``max_length`` each."""
    options = dict(return_attention_mask=False, return_token_type_ids=False, verbose=False)
    if truncation == "head":
        return tokenizer(list(texts), truncation=True, max_length=max_length, **options)[
            "input_ids"
        ]
    before, after = _special_token_counts(tokenizer)
    budget = max_length - before - after
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for head_tail content")
    head, tail = budget - budget // 2, budget // 2
    encoded = tokenizer(list(texts), truncation=False, **options)["input_ids"]
    return [
        ids if len(ids) <= max_length else ids[: before + head] + ids[len(ids) - after - tail :]
        for ids in encoded
    ]


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
    if truncation not in ("head", "head_tail"):
        raise ValueError(f"truncation must be 'head' or 'head_tail', got {truncation!r}")
    key = _cache_key(texts, tokenizer, max_length, truncation)
    cache_file = Path(cache_dir) / f"tokens-{key}.npz" if cache_dir is not None else None
    if key in _memory_cache:
        _memory_cache.move_to_end(key)
        ids, offsets = _memory_cache[key]
    elif cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as stored:
            ids, offsets = stored["ids"], stored["offsets"]
    else:
        encoded = _encode(texts, tokenizer, max_length, truncation)
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


def batch_options(data_cfg) -> dict:
    """The batching keyword arguments held by the config's `data` block."""
    return dict(
        buckets=tuple(data_cfg.buckets),
        pack=bool(data_cfg.pack),
        pack_len=int(data_cfg.pack_len),
        max_texts_per_row=int(data_cfg.max_texts_per_row),
    )


def _write_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(buffer.getvalue())
    os.replace(handle.name, path)


# ---------------------------------------------------------------------------------------------
# Batching


@dataclass(frozen=True)
class _PlannedBatch:
    """One batch before materialisation: row length and the example indices of each row."""

    length: int
    rows: tuple[tuple[int, ...], ...]


def _check_buckets(buckets: Sequence[int], lengths: np.ndarray) -> np.ndarray:
    bucket_array = np.asarray(buckets, np.int64)
    if bucket_array.ndim != 1 or bucket_array.size == 0 or np.any(np.diff(bucket_array) <= 0):
        raise ValueError(f"buckets must be a non-empty, strictly increasing sequence: {buckets}")
    longest = int(lengths.max(initial=0))
    if longest > bucket_array[-1]:
        raise ValueError(
            f"the longest sequence has {longest} tokens but the largest bucket is "
            f"{bucket_array[-1]}; the largest bucket must be >= the tokenizer max_length"
        )
    return bucket_array


def _bucketed_plan(
    indices: np.ndarray,
    lengths: np.ndarray,
    buckets: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
) -> list[_PlannedBatch]:
    """One text per row, each in the smallest bucket that holds it; optionally shuffled per bucket.

    The last batch of each bucket may be partial (padded when built).
    """
    bucket_of = np.searchsorted(buckets, lengths[indices])
    plan = []
    for bucket_index, length in enumerate(buckets):
        members = indices[bucket_of == bucket_index]
        if rng is not None:
            members = rng.permutation(members)
        for start in range(0, len(members), batch_size):
            rows = tuple((int(i),) for i in members[start : start + batch_size])
            plan.append(_PlannedBatch(int(length), rows))
    return plan


_PACK_WINDOW = 32  # open rows considered by first-fit before the oldest is closed


def _pack_rows(
    indices: np.ndarray, lengths: np.ndarray, pack_len: int, max_texts_per_row: int
) -> list[tuple[int, ...]]:
    """Greedy first-fit of a stream of texts into rows of ``pack_len`` tokens.

    At most ``_PACK_WINDOW`` rows are open; when another is needed the oldest open row is closed.
    Rows come out in stream order, so shuffling the stream shuffles the rows' contents.
    """
    closed: list[tuple[int, ...]] = []
    open_rows: list[list[int]] = []
    free: list[int] = []
    for index in indices.tolist():
        size = int(lengths[index])
        slot = next((k for k, room in enumerate(free) if room >= size), None)
        if slot is None:
            if len(open_rows) == _PACK_WINDOW:
                closed.append(tuple(open_rows.pop(0)))
                free.pop(0)
            open_rows.append([])
            free.append(pack_len)
            slot = len(open_rows) - 1
        open_rows[slot].append(index)
        free[slot] -= size
        if len(open_rows[slot]) == max_texts_per_row:
            closed.append(tuple(open_rows.pop(slot)))
            free.pop(slot)
    closed.extend(tuple(row) for row in open_rows)
    return closed


def _packed_plan(
    lengths: np.ndarray,
    buckets: np.ndarray,
    batch_size: int,
    pack_len: int,
    max_texts_per_row: int,
    rng: np.random.Generator | None,
) -> list[_PlannedBatch]:
    """Pack texts of at most ``pack_len`` tokens; longer ones go one per row into the buckets."""
    if pack_len < 1 or max_texts_per_row < 1:
        raise ValueError(
            f"pack_len and max_texts_per_row must be >= 1: {pack_len}, {max_texts_per_row}"
        )
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    fits = lengths[order] <= pack_len
    rows = _pack_rows(order[fits], lengths, pack_len, max_texts_per_row)
    plan = [
        _PlannedBatch(pack_len, tuple(rows[start : start + batch_size]))
        for start in range(0, len(rows), batch_size)
    ]
    return plan + _bucketed_plan(np.sort(order[~fits]), lengths, buckets, batch_size, rng)


def _lengths(token_ids: Sequence[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(ids) for ids in token_ids), np.int64, count=len(token_ids))


def _train_plan(
    token_ids: Sequence[np.ndarray],
    batch_size: int,
    buckets: Sequence[int],
    seed: int,
    epoch: int,
    pack: bool,
    pack_len: int,
    max_texts_per_row: int,
) -> list[_PlannedBatch]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = _lengths(token_ids)
    bucket_array = _check_buckets(buckets, lengths)
    rng = np.random.default_rng([seed, epoch])
    if pack:
        plan = _packed_plan(lengths, bucket_array, batch_size, pack_len, max_texts_per_row, rng)
    else:
        plan = _bucketed_plan(np.arange(len(lengths)), lengths, bucket_array, batch_size, rng)
    return [plan[i] for i in rng.permutation(len(plan))]


def _build_batch(
    planned: _PlannedBatch,
    token_ids: Sequence[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    texts_per_row: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    shape, slots = (batch_size, planned.length), (batch_size, texts_per_row)
    batch = {
        "input_ids": np.full(shape, pad_id, np.int32),
        "segment_ids": np.zeros(shape, np.int32),
        "text_rows": np.zeros(slots, np.int32),
        "labels": np.zeros(slots, np.int32),
        "text_mask": np.zeros(slots, np.float32),
        "example_index": np.full(slots, -1, np.int32),
    }
    for row, members in enumerate(planned.rows):
        position = 0
        for slot, index in enumerate(members):
            ids = token_ids[index]
            end = position + len(ids)
            batch["input_ids"][row, position:end] = ids
            batch["segment_ids"][row, position:end] = slot + 1
            batch["text_rows"][row, slot] = position
            batch["labels"][row, slot] = labels[index]
            batch["text_mask"][row, slot] = 1.0
            batch["example_index"][row, slot] = index
            position = end
    return batch


def _check_labels(token_ids: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (len(token_ids),):
        raise ValueError(f"labels shape {labels.shape} does not match {len(token_ids)} texts")
    return labels


def num_train_batches(
    token_ids: Sequence[np.ndarray],
    *,
    batch_size: int,
    buckets: Sequence[int],
    seed: int,
    epoch: int,
    pack: bool = False,
    pack_len: int = 128,
    max_texts_per_row: int = 8,
) -> int:
    """Exact number of batches ``train_batches`` yields for this epoch (packing varies by epoch)."""
    return len(
        _train_plan(token_ids, batch_size, buckets, seed, epoch, pack, pack_len, max_texts_per_row)
    )


def train_batches(
    token_ids: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    batch_size: int,
    buckets: Sequence[int],
    seed: int,
    epoch: int,
    pad_id: int,
    start_batch: int = 0,
    pack: bool = False,
    pack_len: int = 128,
    max_texts_per_row: int = 8,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield one epoch of shuffled batches (every example once), starting at ``start_batch``.

    Shuffling depends only on (seed, epoch): texts are shuffled within their bucket (or, packed,
    in one stream), batched, and the batch order is shuffled. Batches never mix lengths. With
    ``pack=True`` texts of at most ``pack_len`` tokens are packed into rows of ``pack_len``
    tokens (``batch_size`` rows per batch); longer texts get one row each in the buckets.
    """
    labels = _check_labels(token_ids, labels)
    plan = _train_plan(
        token_ids, batch_size, buckets, seed, epoch, pack, pack_len, max_texts_per_row
    )
    if not 0 <= start_batch <= len(plan):
        raise ValueError(f"start_batch {start_batch} is outside this epoch's {len(plan)} batches")
    texts_per_row = max_texts_per_row if pack else 1
    for planned in plan[start_batch:]:
        yield _build_batch(planned, token_ids, labels, batch_size, texts_per_row, pad_id)


def eval_batches(
    token_ids: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    batch_size: int,
    buckets: Sequence[int],
    pad_id: int,
    pack: bool = False,
    pack_len: int = 128,
    max_texts_per_row: int = 8,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield every example exactly once, unshuffled; partial batches are padded, never dropped."""
    labels = _check_labels(token_ids, labels)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = _lengths(token_ids)
    bucket_array = _check_buckets(buckets, lengths)
    if pack:
        plan = _packed_plan(lengths, bucket_array, batch_size, pack_len, max_texts_per_row, None)
    else:
        plan = _bucketed_plan(np.arange(len(lengths)), lengths, bucket_array, batch_size, None)
    texts_per_row = max_texts_per_row if pack else 1
    for planned in plan:
        yield _build_batch(planned, token_ids, labels, batch_size, texts_per_row, pad_id)


@dataclass(frozen=True)
class PackingStats:
    """How well one epoch's texts pack: ``fill_ratio`` = real tokens / (rows * pack_len)."""

    rows: int
    packed_texts: int
    unpacked_texts: int
    real_tokens: int
    fill_ratio: float
    texts_per_row: float


def packing_stats(
    token_ids: Sequence[np.ndarray],
    *,
    pack_len: int,
    max_texts_per_row: int,
    seed: int = 0,
    epoch: int = 0,
) -> PackingStats:
    """Packing outcome for the texts of at most ``pack_len`` tokens in one training epoch."""
    lengths = _lengths(token_ids)
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    packed = order[lengths[order] <= pack_len]
    rows = _pack_rows(packed, lengths, pack_len, max_texts_per_row)
    real_tokens = int(lengths[packed].sum())
    return PackingStats(
        rows=len(rows),
        packed_texts=len(packed),
        unpacked_texts=len(lengths) - len(packed),
        real_tokens=real_tokens,
        fill_ratio=real_tokens / max(len(rows) * pack_len, 1),
        texts_per_row=len(packed) / max(len(rows), 1),
    )


def token_fill_ratio(batches: Iterable[dict[str, np.ndarray]]) -> float:
    """Real tokens / computed tokens over batches (how much of the compute is not padding)."""
    real = computed = 0
    for batch in batches:
        real += int(np.count_nonzero(batch["segment_ids"]))
        computed += batch["segment_ids"].size
    return real / max(computed, 1)


# ---------------------------------------------------------------------------------------------
# Distribution


def shard_batch(
    batch: dict[str, np.ndarray], num_shards: int, shard_index: int
) -> dict[str, np.ndarray]:
    """Rows ``[i*B/n, (i+1)*B/n)`` of every array: the slice process ``i`` of ``n`` feeds."""
    batch_size = _leading_dim(batch)
    if not 0 <= shard_index < num_shards or batch_size % num_shards:
        raise ValueError(
            f"cannot take shard {shard_index} of {num_shards} from a batch of {batch_size} rows"
        )
    size = batch_size // num_shards
    return {k: v[shard_index * size : (shard_index + 1) * size] for k, v in batch.items()}


def device_split(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
    """Reshape every array's leading dim B to [num_devices, B / num_devices] (for pmap)."""
    batch_size = _leading_dim(batch)
    if num_devices < 1 or batch_size % num_devices:
        raise ValueError(f"batch of {batch_size} rows does not split over {num_devices} devices")
    return {
        k: v.reshape(num_devices, batch_size // num_devices, *v.shape[1:]) for k, v in batch.items()
    }


def _leading_dim(batch: dict[str, np.ndarray]) -> int:
    sizes = {v.shape[0] for v in batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"batch arrays disagree on the leading dimension: {sorted(sizes)}")
    return sizes.pop()
