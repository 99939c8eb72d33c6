"""The `cmhl_emotion` TFDS builder: dair-ai emotion in the public `text;label` format (`train.txt`,
`val.txt`, optional `test.txt`; `.csv` with `text,label` also works), prepared offline from a
manual dir (`python -m cmhl_jax.data.tfds_builders cmhl_emotion --manual_dir DIR`).
Features: `text` (Text), `label` (ClassLabel over the task's `EMOTIONS`). Splits: `train`,
`validation`, `test` (those present). Needs tensorflow-datasets.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from cmhl_jax.data.sources import DataError, read_examples
from cmhl_jax.data.tfds_builders import manual_dir
from cmhl_jax.tasks.emotion.affect import EMOTIONS

_SPLITS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}


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
        manual = manual_dir(dl_manager)
        splits = {}
        for split, stems in _SPLITS.items():
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
