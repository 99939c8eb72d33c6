"""Host-side data pipeline, one module per job.

- ``sources``: read labelled texts (``.txt``/``.csv`` files, ``hf:`` and ``tfds:`` datasets) and
  resolve a config's split names to those sources.
- ``tokens``: token ids per text, computed once and cached in memory and on disk.
- ``batching``: ``BatchOptions`` (buckets, packing) and ``EpochPlan``, an epoch's batches
  planned once; the batch format is described there.
- ``sharding``: a batch's slice for one process, or for each local device.
"""

from cmhl_jax.data.batching import (
    BatchOptions,
    EpochPlan,
    PackingStats,
    eval_batches,
    packing_stats,
)
from cmhl_jax.data.sharding import device_split, shard_batch
from cmhl_jax.data.sources import (
    SPLIT_ALIASES,
    DataError,
    Examples,
    load_split,
    read_examples,
    resolve_split,
    split_spec,
    warn_overlap,
)
from cmhl_jax.data.tokens import tokenize, tokenize_split

__all__ = [
    "SPLIT_ALIASES",
    "BatchOptions",
    "DataError",
    "EpochPlan",
    "Examples",
    "PackingStats",
    "device_split",
    "eval_batches",
    "load_split",
    "packing_stats",
    "read_examples",
    "resolve_split",
    "shard_batch",
    "split_spec",
    "tokenize",
    "tokenize_split",
    "warn_overlap",
]
