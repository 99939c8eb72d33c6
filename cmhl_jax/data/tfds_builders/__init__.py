"""The project's TFDS datasets, prepared offline from local files (the command line:
`__main__.py`).

Each is a TFDS "manual download" dataset: the source files are put in a folder (the manual
dir) and the dataset is prepared from them, without network, in the array_record format, which
is read back without TensorFlow (`tfds:NAME[:SPLIT]`, `--config.data.tfds_dataset=NAME`). The
builders live with their tasks, which know the label names (`sources.TFDS_BUILDERS`):

* `cmhl_emotion`: dair-ai emotion from `text;label` files (`cmhl_jax/tasks/emotion/tfds.py`);
* `cmhl_goemotions`: GoEmotions from the official TSVs and `emotions.txt`, multi-label
  (`cmhl_jax/tasks/goemotions/tfds.py`).

Prepare (the `tfds build` command needs TensorFlow; this does not):

    python -m cmhl_jax.data.tfds_builders cmhl_emotion --manual_dir ../shared/data/emotion
    python -m cmhl_jax.data.tfds_builders cmhl_goemotions --manual_dir ../shared/data/goemotions

into `--data_dir` (default `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`). In Python:
`prepare("cmhl_emotion", manual_dir=..., data_dir=...)`. Shared storage works as the data dir
(`gs://...`): prepare once, read from every host.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow_datasets as tfds

from cmhl_jax.data.sources import TFDS_BUILDERS, DataError, tfds_builder_class

BUILDERS = tuple(sorted(TFDS_BUILDERS))


def manual_dir(dl_manager) -> Path:
    """The manual dir of a builder's download manager; a one-line DataError when none was
    given."""
    try:
        return Path(os.fspath(dl_manager.manual_dir))
    except AssertionError as error:  # TFDS: no manual dir, or an empty one
        raise DataError(
            f"{str(error).split(' Create it')[0]} Pass --manual_dir DIR (the folder with the "
            "source files) to python -m cmhl_jax.data.tfds_builders NAME"
        ) from None


def prepare(
    name: str,
    *,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    file_format: str = "array_record",
):
    """Prepares dataset `name` (`cmhl_emotion`, `cmhl_goemotions`) from the files in
    `manual_dir` into `data_dir` (default `$TFDS_DATA_DIR`, else TFDS's default); returns the
    builder. Offline; an already prepared version is kept."""
    if name not in BUILDERS:
        raise DataError(f"unknown dataset {name!r}; the project's builders: {sorted(BUILDERS)}")
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    builder = tfds_builder_class(name)(
        data_dir=None if data_dir is None else os.fspath(data_dir), file_format=file_format
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    return builder
