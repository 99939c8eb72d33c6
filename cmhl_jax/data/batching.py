"""Batches: texts in length buckets or packed several to a row, planned once per epoch.

Batch format (a dict of numpy arrays; B rows of length L, R text slots per row):

- ``input_ids`` [B, L] int32: token ids, padded with the tokenizer's pad id.
- ``segment_ids`` [B, L] int32: 0 on padding, k >= 1 on the tokens of the k-th text of the row
  (unpacked rows hold one text, so 1 on every real token).
- ``text_rows`` [B, R] int32: position in the row of each text's first token ([CLS]); 0 if empty.
- ``labels`` [B, R] int32: class id of each text; 0 if empty. Multi-label data (``labels`` of
  the split [N, C], multi-hot) gives [B, R, C] in the split's dtype, all zero if empty.
- ``text_mask`` [B, R] float32: 1 for a real text, 0 for an empty slot or a padding row.
- ``example_index`` [B, R] int32: index of the text in its ``Examples``; -1 if empty.

R is 1 for unpacked batches and ``max_texts_per_row`` whenever ``pack=True``. Losses and metrics
must weight by ``text_mask``: the last, partial batch of each bucket is padded with empty rows,
in training too, so that every example is seen exactly once per epoch (small buckets would
otherwise never be trained on).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class BatchOptions:
    """How texts become rows: the config's ``data.buckets``, ``pack``, ``pack_len`` and
    ``max_texts_per_row``, checked once by ``tasks.validate_config`` (not again here)."""

    buckets: tuple[int, ...]
    pack: bool = False
    pack_len: int = 128
    max_texts_per_row: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "buckets", tuple(int(b) for b in self.buckets))

    @classmethod
    def from_config(cls, data_cfg) -> BatchOptions:
        """The options held by a config's ``data`` block."""
        return cls(
            buckets=tuple(data_cfg.buckets),
            pack=bool(data_cfg.pack),
            pack_len=int(data_cfg.pack_len),
            max_texts_per_row=int(data_cfg.max_texts_per_row),
        )

    @property
    def texts_per_row(self) -> int:
        """R, the text slots of every row: ``max_texts_per_row`` when packing, else 1."""
        return self.max_texts_per_row if self.pack else 1


@dataclass(frozen=True)
class _PlannedBatch:
    """One batch before materialisation: row length and the example indices of each row."""

    length: int
    rows: tuple[tuple[int, ...], ...]


def _lengths(token_ids: Sequence[np.ndarray]) -> np.ndarray:
    """Tokens per text, as int64."""
    return np.fromiter((len(ids) for ids in token_ids), np.int64, count=len(token_ids))


def _check_fits(lengths: np.ndarray, buckets: np.ndarray) -> None:
    """Every text needs a bucket: none may be longer than the largest one."""
    longest = int(lengths.max(initial=0))
    if longest > buckets[-1]:
        raise ValueError(
            f"the longest sequence has {longest} tokens but the largest bucket is "
            f"{buckets[-1]}; the largest bucket must be >= the tokenizer max_length"
        )


def _check_labels(token_ids: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Labels as an array with one entry per text: [N] class ids or [N, C] multi-hot rows."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != len(token_ids):
        raise ValueError(f"labels shape {labels.shape} does not match {len(token_ids)} texts")
    return labels


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


def _pack_rows(
    indices: np.ndarray, lengths: np.ndarray, pack_len: int, max_texts_per_row: int
) -> list[tuple[int, ...]]:
    """Texts into rows of at most ``pack_len`` tokens and ``max_texts_per_row`` texts: best fit
    or first fit, whichever needs fewer rows (best fit on a tie). Callers shuffle the rows.

    Best fit wins when the tokens bind (the emotion split: 5,578 rows against 5,729), first fit
    when the text cap does (short texts: best fit closes rows on three long texts that first fit
    would have shared with a short one).
    """
    best = _best_fit_rows(indices, lengths, pack_len, max_texts_per_row)
    first = _first_fit_rows(indices, lengths, pack_len, max_texts_per_row)
    return first if len(first) < len(best) else best


def _best_fit_rows(
    indices: np.ndarray, lengths: np.ndarray, pack_len: int, max_texts_per_row: int
) -> list[tuple[int, ...]]:
    """Best-fit decreasing: the texts, longest first, each into the open row it fills best.

    A row closes when it is full or holds ``max_texts_per_row`` texts. Texts of equal length
    keep their order in ``indices``, so shuffling ``indices`` shuffles which of them share a
    row.
    """
    longest_first = indices[np.argsort(-lengths[indices], kind="stable")]
    rows: list[list[int]] = []
    rows_with_room: list[list[int]] = [[] for _ in range(pack_len + 1)]  # free tokens -> rows
    for index, size in zip(longest_first.tolist(), lengths[longest_first].tolist(), strict=True):
        room = next((r for r in range(size, pack_len + 1) if rows_with_room[r]), None)
        if room is None:
            rows.append([])
            row, room = len(rows) - 1, pack_len
        else:
            row = rows_with_room[room].pop()
        rows[row].append(index)
        if len(rows[row]) < max_texts_per_row and room > size:
            rows_with_room[room - size].append(row)
    return [tuple(row) for row in rows]


_FIRST_FIT_WINDOW = 32  # open rows first fit considers before the oldest is closed


def _first_fit_rows(
    indices: np.ndarray, lengths: np.ndarray, pack_len: int, max_texts_per_row: int
) -> list[tuple[int, ...]]:
    """First fit of the texts in their order in ``indices``, at most ``_FIRST_FIT_WINDOW``
    rows open; when another is needed the oldest open row is closed."""
    closed: list[tuple[int, ...]] = []
    open_rows: list[list[int]] = []
    free: list[int] = []
    for index in indices.tolist():
        size = int(lengths[index])
        slot = next((k for k, room in enumerate(free) if room >= size), None)
        if slot is None:
            if len(open_rows) == _FIRST_FIT_WINDOW:
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
    options: BatchOptions,
    rng: np.random.Generator | None,
) -> list[_PlannedBatch]:
    """Pack texts of at most ``pack_len`` tokens; longer ones go one per row into the buckets."""
    pack_len = options.pack_len
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    fits = lengths[order] <= pack_len
    rows = _pack_rows(order[fits], lengths, pack_len, options.max_texts_per_row)
    if rng is not None:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    plan = [
        _PlannedBatch(pack_len, tuple(rows[start : start + batch_size]))
        for start in range(0, len(rows), batch_size)
    ]
    return plan + _bucketed_plan(np.sort(order[~fits]), lengths, buckets, batch_size, rng)


def _build_batch(
    planned: _PlannedBatch,
    token_ids: Sequence[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    texts_per_row: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """The arrays of one planned batch; rows and slots beyond its texts stay padding."""
    shape, slots = (batch_size, planned.length), (batch_size, texts_per_row)
    batch = {
        "input_ids": np.full(shape, pad_id, np.int32),
        "segment_ids": np.zeros(shape, np.int32),
        "text_rows": np.zeros(slots, np.int32),
        "labels": (
            np.zeros(slots, np.int32)
            if labels.ndim == 1
            else np.zeros(slots + labels.shape[1:], labels.dtype)
        ),
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


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """Which texts fill which rows of which batch, in order, for one pass over a split.

    Built once per epoch: ``len(plan)`` is the epoch's step count and ``batches`` builds the
    arrays lazily from any start, so a resumed epoch continues with the very same batches.
    """

    token_ids: Sequence[np.ndarray]
    labels: np.ndarray
    batch_size: int
    texts_per_row: int
    planned: tuple[_PlannedBatch, ...]

    @classmethod
    def build(
        cls,
        token_ids: Sequence[np.ndarray],
        labels: np.ndarray,
        *,
        options: BatchOptions,
        batch_size: int,
        seed: int,
        epoch: int,
    ) -> EpochPlan:
        """A training epoch: every example once, in an order that depends only on (seed, epoch).

        Texts are shuffled within their bucket, batched, and the batch order is shuffled.
        Batches never mix lengths. With ``options.pack`` texts of at most ``pack_len`` tokens
        share rows of ``pack_len`` tokens (`_pack_rows`: best or first fit of the shuffled texts,
        whichever needs fewer rows; then the rows are shuffled; ``batch_size`` rows per batch);
        longer texts get one row each in the buckets.
        """
        rng = np.random.default_rng([seed, epoch])
        plan = cls._make(token_ids, labels, options, batch_size, rng)
        order = rng.permutation(len(plan.planned))
        return replace(plan, planned=tuple(plan.planned[i] for i in order))

    @classmethod
    def in_order(
        cls,
        token_ids: Sequence[np.ndarray],
        labels: np.ndarray,
        *,
        options: BatchOptions,
        batch_size: int,
    ) -> EpochPlan:
        """Every example once, unshuffled (for evaluation and prediction)."""
        return cls._make(token_ids, labels, options, batch_size, None)

    @classmethod
    def _make(cls, token_ids, labels, options, batch_size, rng) -> EpochPlan:
        """The plan before the batch order is shuffled; ``rng=None`` keeps the input order."""
        labels = _check_labels(token_ids, labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lengths = _lengths(token_ids)
        buckets = np.asarray(options.buckets, np.int64)
        _check_fits(lengths, buckets)
        if options.pack:
            plan = _packed_plan(lengths, buckets, batch_size, options, rng)
        else:
            plan = _bucketed_plan(np.arange(len(lengths)), lengths, buckets, batch_size, rng)
        return cls(token_ids, labels, batch_size, options.texts_per_row, tuple(plan))

    def __len__(self) -> int:
        return len(self.planned)

    def batches(self, *, pad_id: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches from the ``start``-th on (padded rows and slots: see the module doc)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start batch {start} is outside this epoch's {len(self)} batches")
        return (
            _build_batch(
                planned, self.token_ids, self.labels, self.batch_size, self.texts_per_row, pad_id
            )
            for planned in self.planned[start:]
        )


def eval_batches(
    token_ids: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    options: BatchOptions,
    batch_size: int,
    pad_id: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Every example exactly once, unshuffled; partial batches are padded, never dropped."""
    plan = EpochPlan.in_order(token_ids, labels, options=options, batch_size=batch_size)
    return plan.batches(pad_id=pad_id)


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
    token_ids: Sequence[np.ndarray], *, options: BatchOptions, seed: int = 0, epoch: int = 0
) -> PackingStats:
    """Packing outcome for the texts of at most ``options.pack_len`` tokens in one training
    epoch (the rows ``EpochPlan.build`` packs, whether or not ``options.pack`` is set)."""
    pack_len = options.pack_len
    lengths = _lengths(token_ids)
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    packed = order[lengths[order] <= pack_len]
    rows = _pack_rows(packed, lengths, pack_len, options.max_texts_per_row)
    real_tokens = int(lengths[packed].sum())
    return PackingStats(
        rows=len(rows),
        packed_texts=len(packed),
        unpacked_texts=len(lengths) - len(packed),
        real_tokens=real_tokens,
        fill_ratio=real_tokens / max(len(rows) * pack_len, 1),
        texts_per_row=len(packed) / max(len(rows), 1),
    )
