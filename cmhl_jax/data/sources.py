"""Where labelled texts come from: local ``.txt``/``.csv`` files, Hugging Face and TFDS datasets,
and which of those a config's split names (``split_spec``, ``CMHL_DATA_DIR``)."""

from __future__ import annotations

import csv
import importlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmhl_jax.errors import UserError

logger = logging.getLogger(__name__)

_MAX_LINES_IN_MESSAGE = 5
_INT_LABEL = re.compile(r"[0-9]+")


class DataError(UserError, ValueError):
    """Malformed input data; the message names the file and the offending lines."""


# The project's TFDS builders (prepared with `python -m cmhl_jax.data.tfds_builders NAME`),
# each defined with its task, which knows the label names: "module:class", imported when the
# dataset is read or prepared (the data layer imports no task code).
TFDS_BUILDERS = {
    "cmhl_emotion": "cmhl_jax.tasks.emotion.tfds:CmhlEmotion",
    "cmhl_goemotions": "cmhl_jax.tasks.goemotions.tfds:CmhlGoemotions",
}


def tfds_builder_class(name: str):
    """The builder class of the project's TFDS dataset `name` (registered with TFDS once
    imported)."""
    module, _, attr = TFDS_BUILDERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class Examples:
    """Labelled texts read from one source; ``skipped`` counts bad lines dropped while reading."""

    texts: list[str]
    labels: np.ndarray
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


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


def _tsv_records(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """Yield (line, text, label ids, problem) from a GoEmotions-format ``.tsv`` file: no header,
    ``text \t comma-separated label ids \t comment id`` (the id column is optional); texts may
    use CSV quoting (``"..."`` with ``""`` escapes), read as ``csv.reader(delimiter='\t')`` does."""
    for number, line, problem in _decoded_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            row = next(csv.reader([line], delimiter="\t", strict=True))
        except csv.Error as error:
            yield number, "", "", problem or f"malformed TSV record ({error})"
            continue
        if problem is None and len(row) not in (2, 3):
            problem = f"expected 2 or 3 tab-separated fields (text, label ids, id), got {len(row)}"
        yield number, (row[0] if row else ""), (row[1] if len(row) > 1 else ""), problem


def _label_ids(label: str, label_names: Sequence[str]) -> list[int] | None:
    """Comma-separated label names or ids (``"4,27"``) to their ids; None if any is unknown."""
    ids = [_label_id(part, label_names) for part in label.split(",")]
    return None if not ids or any(i is None for i in ids) else ids


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
    multi_label: bool = False,
) -> Examples:
    """Validate records into Examples; bad ones raise DataError, or are skipped and counted.

    Single-label records give ``labels`` int32 [N] (class ids); with ``multi_label`` each label
    is a comma-separated list of ids and ``labels`` is multi-hot float32 [N, C].
    """
    texts: list[str] = []
    labels: list = []
    bad: list[tuple[int, str]] = []
    parse = _label_ids if multi_label else _label_id
    for number, text, label, problem in records:
        text = text.strip()
        label_id = None if problem else parse(label, label_names)
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
    if multi_label:
        multi_hot = np.zeros((len(labels), len(label_names)), np.float32)
        for row, ids in enumerate(labels):
            multi_hot[row, ids] = 1.0
        return Examples(texts, multi_hot, source, skipped=len(bad))
    return Examples(texts, np.asarray(labels, np.int32), source, skipped=len(bad))


def read_examples(
    path: str | os.PathLike, label_names: Sequence[str], *, skip_bad_lines: bool = False
) -> Examples:
    """Read a ``.txt`` (``text;label``, label after the last ``;``), ``.csv`` (``text,label``) or
    ``.tsv`` (GoEmotions format ``text \t ids \t id``: multi-label, ``labels`` multi-hot [N, C])."""
    path = Path(path)
    readers = {".txt": _txt_records, ".csv": _csv_records, ".tsv": _tsv_records}
    if path.suffix not in readers:
        raise ValueError(f"{path}: unsupported data file type {path.suffix!r} (.txt, .csv or .tsv)")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return _collect(
        str(path),
        readers[path.suffix](path),
        list(label_names),
        skip_bad_lines,
        multi_label=path.suffix == ".tsv",
    )


def no_data_message(spec: str, error: BaseException) -> str:
    """One line for a split that could not be loaded: what was tried, and the ways out."""
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    return (
        f"could not load {spec} ({reason}); no local data was given: pass "
        "--config.data.local_dir=DIR or set the environment variable CMHL_DATA_DIR=DIR, "
        "DIR holding train.txt and val.txt (`text;label` lines) or .csv files "
        "(or prepare a TFDS dataset and pass --config.data.tfds_dataset=NAME, see README)"
    )


def _load_hf(spec: str, label_names: Sequence[str], skip_bad_lines: bool) -> Examples:
    """Load ``hf:NAME[:CONFIG]:SPLIT`` with ``datasets.load_dataset`` (columns text and label)."""
    parts = spec.removeprefix("hf:").split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"bad dataset spec {spec!r}: expected hf:NAME[:CONFIG]:SPLIT")
    import datasets

    name, config, split = parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except OSError as error:  # ConnectionError (no Hub), DatasetNotFoundError, ...
        raise DataError(no_data_message(spec, error)) from None
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

    The dataset needs a ``text`` (Text) feature and either ``label`` (ClassLabel or int: labels
    int32 [N]) or ``labels`` (a Sequence of ClassLabel: multi-label, multi-hot float32 [N, C]).
    The project's builders (``TFDS_BUILDERS``: ``cmhl_emotion``, ``cmhl_goemotions``) are
    registered here. Data lives in ``$TFDS_DATA_DIR`` (default ``~/tensorflow_datasets``);
    an unprepared dataset is prepared in the array_record format, which is read without
    TensorFlow (a dataset already prepared as TFRecord needs TensorFlow installed).
    """
    name, _, split = spec.removeprefix("tfds:").partition(":")
    split = split or "train"
    if not name or ":" in split:
        raise ValueError(f"bad dataset spec {spec!r}: expected tfds:NAME[:SPLIT]")
    try:
        import tensorflow_datasets as tfds

        if name in TFDS_BUILDERS:
            tfds_builder_class(name)  # registers the project's builder
    except ImportError as error:
        raise DataError(
            f"{spec} needs tensorflow-datasets: pip install 'cmhl-jax[tfds]' ({error})"
        ) from None
    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
            builder.download_and_prepare()
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, OSError, DataError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        how = (
            f"python -m cmhl_jax.data.tfds_builders {name} --manual_dir DIR"
            if name in TFDS_BUILDERS
            else f"prepare it into $TFDS_DATA_DIR (the project's builders: "
            f"{', '.join(sorted(TFDS_BUILDERS))})"
        )
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {data_dir or 'the default data dir'} "
            f"and could not be prepared ({reason[:400]}); prepare it with: {how}"
        ) from None
    features = builder.info.features
    label_key = "labels" if "labels" in features and "label" not in features else "label"
    missing = [key for key in ("text", label_key) if key not in features]
    if missing:
        raise DataError(f"{spec}: no feature(s) {missing}; the dataset has {list(features)}")
    multi_label = label_key == "labels"
    label_feature = features[label_key].feature if multi_label else features[label_key]
    class_names = getattr(label_feature, "names", None)
    if class_names is not None and list(class_names) != list(label_names):
        raise DataError(f"{spec}: dataset label names {class_names} != expected {label_names}")
    if split not in builder.info.splits:
        raise DataError(f"{spec}: no split {split!r}; the dataset has {list(builder.info.splits)}")
    try:
        rows = builder.as_data_source(split=split)
    except NotImplementedError:  # TFRecord-prepared datasets are read through TensorFlow
        rows = tfds.as_numpy(builder.as_dataset(split=split))

    def text_of(value) -> str:
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    def label_of(value):
        return ",".join(str(int(i)) for i in value) if multi_label else int(value)

    records = (
        (row, text_of(example["text"]), label_of(example[label_key]), None)
        for row, example in enumerate(rows)
    )
    if multi_label:
        return _collect(
            spec, records, list(label_names), skip_bad_lines, unit="row", multi_label=True
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
    """Return ``local_dir/split.txt``, ``.csv`` or ``.tsv``, whichever exists (only one may)."""
    local_dir = Path(local_dir)
    found = [local_dir / f"{split}{ext}" for ext in (".txt", ".csv", ".tsv")]
    found = [p for p in found if p.is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{' and '.join(map(str, found))} exist; keep only one")
    present = sorted(p.name for p in local_dir.iterdir()) if local_dir.is_dir() else None
    where = f"it holds {present}" if present is not None else "the directory does not exist"
    raise FileNotFoundError(
        f"no {split}.txt or {split}.csv (or {split}.tsv) in {local_dir} ({where})"
    )


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
