"""The `cmhl_goemotions` TFDS builder: GoEmotions (Demszky et al., ACL 2020) from the official
TSVs (`train.tsv`, `dev.tsv`, optional `test.tsv`, and `emotions.txt`, which must list the 28
official label names, the task's `EMOTIONS`), prepared offline from a manual dir
(`python -m cmhl_jax.data.tfds_builders cmhl_goemotions --manual_dir DIR`). Features: `text`
(Text), `labels` (Sequence of ClassLabel over the 28 names: a multi-label text has several),
`comment_id` (Text). Splits: `train`, `validation` (dev.tsv), `test` (those present). Needs
tensorflow-datasets.
"""

from __future__ import annotations

import csv
from pathlib import Path

import tensorflow_datasets as tfds

from cmhl_jax.data.sources import DataError
from cmhl_jax.data.tfds_builders import manual_dir
from cmhl_jax.tasks.goemotions.labels import EMOTIONS

_SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


class CmhlGoemotions(tfds.core.GeneratorBasedBuilder):
    """GoEmotions (27 emotions + neutral, multi-label) from the official TSV files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From the official train/dev(/test) TSVs and emotions.txt."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the official GoEmotions train.tsv, dev.tsv (optionally test.tsv) and emotions.txt "
        "(google-research goemotions/data) in the manual dir."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=(
                "GoEmotions (Demszky et al., ACL 2020): Reddit comments, 27 emotions + neutral, "
                "multi-label; labels are ids into the 28 official names."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "labels": tfds.features.Sequence(
                        tfds.features.ClassLabel(names=list(EMOTIONS))
                    ),
                    "comment_id": tfds.features.Text(),
                }
            ),
            homepage="https://github.com/google-research/google-research/tree/master/goemotions",
        )

    def _split_generators(self, dl_manager):
        manual = manual_dir(dl_manager)
        names_file = manual / "emotions.txt"
        if not names_file.is_file():
            raise DataError(f"no emotions.txt (the 28 label names) in the manual dir {manual}")
        names = names_file.read_text(encoding="utf-8").split()
        if names != list(EMOTIONS):
            raise DataError(f"{names_file}: label names {names} != the official {list(EMOTIONS)}")
        splits = {
            split: self._generate_examples(manual / file)
            for split, file in _SPLITS.items()
            if (manual / file).is_file()
        }
        missing = [f for s, f in _SPLITS.items() if s != "test" and s not in splits]
        if missing:
            raise DataError(f"no {' or '.join(missing)} in the manual dir {manual}")
        return splits

    def _generate_examples(self, path: Path):
        with path.open(encoding="utf-8", newline="") as f:
            for number, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
                if not row:
                    continue
                if len(row) not in (2, 3):
                    raise DataError(f"{path}:{number}: expected 3 tab-separated fields, got {row}")
                try:
                    ids = [int(i) for i in row[1].split(",")]
                except ValueError:
                    ids = None
                if not ids or not all(0 <= i < len(EMOTIONS) for i in ids):
                    raise DataError(f"{path}:{number}: bad label ids {row[1]!r}")
                comment_id = row[2] if len(row) == 3 else f"{path.stem}-{number}"
                yield (
                    f"{path.stem}-{number}",
                    {
                        "text": row[0],
                        "labels": ids,
                        "comment_id": comment_id,
                    },
                )
