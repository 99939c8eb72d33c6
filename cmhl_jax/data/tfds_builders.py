"""TFDS builders for the project's datasets, prepared offline from local files.

Both are TFDS "manual download" datasets: the source files are put in a folder (the manual
dir) and the dataset is prepared from them, without network, in the array_record format, which
is read back without TensorFlow (`tfds:NAME[:SPLIT]`, `--config.data.tfds_dataset=NAME`).

* `cmhl_emotion`: dair-ai emotion in the public `text;label` format (`train.txt`, `val.txt`,
  optional `test.txt`; `.csv` with `text,label` also works). Features: `text` (Text),
  `label` (ClassLabel over `sadness joy love anger fear surprise`). Splits: `train`,
  `validation`, `test` (those present).
* `cmhl_goemotions`: GoEmotions (Demszky et al., ACL 2020) from the official TSVs (`train.tsv`,
  `dev.tsv`, optional `test.tsv`, and `emotions.txt`, which must list the 28 official label
  names). Features: `text` (Text), `labels` (Sequence of ClassLabel over the 28 names: a
  multi-label text has several), `comment_id` (Text). Splits: `train`, `validation` (dev.tsv),
  `test` (those present).

Prepare (the `tfds build` command needs TensorFlow; this does not):

    python -m cmhl_jax.data.tfds_builders cmhl_emotion --manual_dir ../shared/data/emotion
    python -m cmhl_jax.data.tfds_builders cmhl_goemotions --manual_dir ../shared/data/goemotions

into `--data_dir` (default `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`). In Python:
`prepare("cmhl_emotion", manual_dir=..., data_dir=...)`. Shared storage works as the data dir
(`gs://...`): prepare once, read from every host.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import tensorflow_datasets as tfds

from cmhl_jax.affect import EMOTIONS
from cmhl_jax.data.sources import DataError, read_examples

# The official GoEmotions label names, in id order (google-research goemotions/data/emotions.txt).
GOEMOTIONS_LABELS = (
    "admiration amusement anger annoyance approval caring confusion curiosity desire "
    "disappointment disapproval disgust embarrassment excitement fear gratitude grief joy love "
    "nervousness optimism pride realization relief remorse sadness surprise neutral"
).split()

_EMOTION_SPLITS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
_GOEMOTIONS_SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


if __name__ == "__main__":  # run through the package module: each builder registers once
    from cmhl_jax.data import tfds_builders

    sys.exit(tfds_builders.main())


def _manual_dir(dl_manager) -> Path:
    try:
        return Path(os.fspath(dl_manager.manual_dir))
    except AssertionError as error:  # TFDS: no manual dir, or an empty one
        raise DataError(
            f"{str(error).split(' Create it')[0]} Pass --manual_dir DIR (the folder with the "
            "source files) to python -m cmhl_jax.data.tfds_builders NAME"
        ) from None


class CmhlEmotion(tfds.core.GeneratorBasedBuilder):
    """dair-ai emotion (6 classes) from local `text;label` files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From the public text;label files."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train.txt and val.txt (and optionally test.txt) of dair-ai/emotion, one "
        "`text;label` line per text (label a name or an id 0-5), in the manual dir."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description="dair-ai emotion: English tweets, 6 emotions (Saravia et al., 2018).",
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=EMOTIONS)}
            ),
            supervised_keys=("text", "label"),
            homepage="https://huggingface.co/datasets/dair-ai/emotion",
        )

    def _split_generators(self, dl_manager):
        manual = _manual_dir(dl_manager)
        splits = {}
        for split, stems in _EMOTION_SPLITS.items():
            found = [
                manual / f"{stem}{suffix}"
                for stem in stems
                for suffix in (".txt", ".csv")
                if (manual / f"{stem}{suffix}").is_file()
            ]
            if found:
                splits[split] = self._generate_examples(found[0])
        if "train" not in splits:
            raise DataError(f"no train.txt or train.csv in the manual dir {manual}")
        return splits

    def _generate_examples(self, path: Path):
        examples = read_examples(path, EMOTIONS)
        for i, (text, label) in enumerate(zip(examples.texts, examples.labels, strict=True)):
            yield i, {"text": text, "label": int(label)}


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
                        tfds.features.ClassLabel(names=GOEMOTIONS_LABELS)
                    ),
                    "comment_id": tfds.features.Text(),
                }
            ),
            homepage="https://github.com/google-research/google-research/tree/master/goemotions",
        )

    def _split_generators(self, dl_manager):
        manual = _manual_dir(dl_manager)
        names_file = manual / "emotions.txt"
        if not names_file.is_file():
            raise DataError(f"no emotions.txt (the 28 label names) in the manual dir {manual}")
        names = names_file.read_text(encoding="utf-8").split()
        if names != GOEMOTIONS_LABELS:
            raise DataError(
                f"{names_file}: label names {names} != the official {GOEMOTIONS_LABELS}"
            )
        splits = {
            split: self._generate_examples(manual / file)
            for split, file in _GOEMOTIONS_SPLITS.items()
            if (manual / file).is_file()
        }
        missing = [f for s, f in _GOEMOTIONS_SPLITS.items() if s != "test" and s not in splits]
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
                if not ids or not all(0 <= i < len(GOEMOTIONS_LABELS) for i in ids):
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


BUILDERS = {"cmhl_emotion": CmhlEmotion, "cmhl_goemotions": CmhlGoemotions}


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
    builder = BUILDERS[name](
        data_dir=None if data_dir is None else os.fspath(data_dir), file_format=file_format
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    return builder


def main(argv: list[str] | None = None) -> int:
    from cmhl_jax import cli

    parser = argparse.ArgumentParser(
        prog="python -m cmhl_jax.data.tfds_builders",
        description="Prepare one of the project's TFDS datasets from local files (offline).",
    )
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--manual_dir", required=True, help="the folder with the source files")
    parser.add_argument("--data_dir", default=None, help="default: $TFDS_DATA_DIR")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.user_errors(parser.prog):
        builder = prepare(args.name, manual_dir=args.manual_dir, data_dir=args.data_dir)
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    print(f"{args.name} {builder.info.version} in {builder.data_dir}: {splits}")
    return 0
