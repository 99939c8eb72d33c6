"""Splitting a global batch between processes (``shard_batch``) and local devices
(``device_split``); every array of a batch has the batch rows as its leading dimension."""

from __future__ import annotations

import numpy as np


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
    """The batch's row count; every array must agree on it."""
    sizes = {v.shape[0] for v in batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"batch arrays disagree on the leading dimension: {sorted(sizes)}")
    return sizes.pop()
