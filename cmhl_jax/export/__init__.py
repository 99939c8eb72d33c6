"""Export a trained workdir to a portable folder, and import it back: the library of the
`cmhl-export` command (`cmhl_jax.export_cli`).

The export folder holds:

* the encoder in Hugging Face format (`config.json`, `model.safetensors`; loadable with
  `transformers.AutoModel.from_pretrained(EXPORT_DIR)`) and its tokenizer files;
* `heads.safetensors`: every head parameter, flat keys `<head>.<param>` (e.g. `emotion.kernel`,
  [hidden, classes], applied as `h @ kernel + bias` to the first-token state h);
* `heads.json`: format version, task, head sizes and label names, the affect config, the
  full training config, the checkpoint step and where it came from.

`load_export(EXPORT_DIR)` rebuilds a `TrainedModel`; `Predictor.from_export(EXPORT_DIR)`
predicts with it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from safetensors.numpy import load_file, save_file

from cmhl_jax.config import to_json
from cmhl_jax.encoder import save_pretrained
from cmhl_jax.evaluate import TrainedModel
from cmhl_jax.model import build_model
from cmhl_jax.paths import is_local
from cmhl_jax.tasks import make_task

FORMAT = "cmhl-jax-export"
VERSION = 1
HEADS_FILE = "heads.safetensors"
META_FILE = "heads.json"


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays → {"a.b.c": array}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = np.ascontiguousarray(np.asarray(value, np.float32))
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def export(trained: TrainedModel, out_dir: str | Path) -> epath.Path:
    """Writes the encoder (HF format), tokenizer, heads.safetensors and heads.json into
    `out_dir`, a local folder or a URL (`gs://...`: written locally first, then copied)."""
    if not is_local(out_dir):
        with tempfile.TemporaryDirectory(prefix="cmhl-export-") as local:
            export(trained, local)
            target = epath.Path(out_dir)
            target.mkdir(parents=True, exist_ok=True)
            for path in epath.Path(local).iterdir():
                path.copy(target / path.name, overwrite=True)
        return target
    return epath.Path(_export_local(trained, Path(str(out_dir))))  # a local folder here


def _export_local(trained: TrainedModel, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = nnx.merge(trained.model_def.graphdef, trained.params["encoder"])
    save_pretrained(encoder, trained.tokenizer, out_dir)
    heads = flatten(trained.params["heads"])
    save_file(heads, out_dir / HEADS_FILE, metadata={"format": FORMAT})
    labels = trained.task.head_labels
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "task": trained.task.name,
        "heads": {
            name: {"size": size, "labels": list(labels[name]) if name in labels else None}
            for name, size in trained.task.head_sizes
        },
        "parameters": {name: list(value.shape) for name, value in heads.items()},
        "head_dropout": trained.model_def.head_dropout,
        "affect": trained.config.affect.to_dict() if "affect" in trained.config else None,
        "config": json.loads(to_json(trained.config)),
        "step": trained.step,
        "source_workdir": str(trained.workdir),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def load_export(export_dir: str | Path) -> TrainedModel:
    """Rebuilds the model of an export folder (encoder from its HF files, heads from
    heads.safetensors)."""
    export_dir = Path(export_dir)
    meta_path = export_dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: is {export_dir} a cmhl_jax export?")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(
            f"{meta_path}: format {meta.get('format')!r} v{meta.get('version')} is not "
            f"{FORMAT!r} <= v{VERSION}"
        )
    config = ml_collections.ConfigDict(meta["config"])
    config.model.encoder = str(export_dir)
    model_def, params, tokenizer = build_model(config.model, make_task(config), seed=config.seed)
    heads = unflatten(load_file(export_dir / HEADS_FILE))
    expected = {k: v.shape for k, v in flatten(params["heads"]).items()}
    found = {k: v.shape for k, v in flatten(heads).items()}
    if expected != found:
        raise ValueError(f"{export_dir / HEADS_FILE}: head parameters {found} != {expected}")
    params["heads"] = heads
    return TrainedModel(
        config=config,
        model_def=model_def,
        params=params,
        tokenizer=tokenizer,
        step=int(meta["step"]),
        workdir=export_dir,
    )
