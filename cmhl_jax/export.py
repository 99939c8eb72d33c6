"""Export a trained workdir to a portable folder, and import it back.

    python -m cmhl_jax.export --workdir runs/minilm --out exports/minilm [--checkpoint best]

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

if __name__ == "__main__":
    from cmhl_jax.runtime import ensure_fast_runtime

    ensure_fast_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from cmhl_jax.affect import build_affect_tables  # noqa: E402
from cmhl_jax.config import to_json  # noqa: E402
from cmhl_jax.evaluate import TrainedModel, load_trained  # noqa: E402

log = logging.getLogger("cmhl_jax")

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


def head_labels(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
    """Label names of each classifier output of the config's task (gate weights have none)."""
    if config.get("task", "emotion") == "mental_health":
        mh = config.mental_health
        classes = list(mh.label_names)
        return {"final": classes, "primary": classes, "intensity": list(mh.level_names)}
    tables = build_affect_tables(config.affect)
    return {
        "emotion": list(tables.emotion_names),
        "valence": list(tables.valence_names),
        "intensity": list(tables.intensity_names),
    }


def primary_output(config: ml_collections.ConfigDict) -> str:
    """The output that holds the class prediction."""
    return "final" if config.get("task", "emotion") == "mental_health" else "emotion"


def _head_sizes(model_def) -> dict[str, int]:
    task = getattr(model_def, "task", None)
    return dict(task.head_sizes if task is not None else model_def.head_sizes)


def build_for_config(config: ml_collections.ConfigDict):
    """`build_model` for the config's task: (model_def, params, tokenizer)."""
    from cmhl_jax.model import build_model

    try:
        from cmhl_jax.tasks import make_task
    except ImportError:  # single-task layout: build_model takes the head sizes
        from cmhl_jax.evaluate import head_sizes_for

        return build_model(
            config.model, head_sizes_for(build_affect_tables(config.affect)), seed=config.seed
        )
    return build_model(config.model, make_task(config), seed=config.seed)


def trained_model(**fields) -> TrainedModel:
    """A TrainedModel from keyword fields (those the dataclass does not have are dropped)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainedModel)}
    return TrainedModel(**{k: v for k, v in fields.items() if k in names})


def export(trained: TrainedModel, out_dir: str | Path) -> Path:
    """Writes the encoder (HF format), tokenizer, heads.safetensors and heads.json."""
    from flax import nnx
    from safetensors.numpy import save_file

    from cmhl_jax.encoder import save_pretrained

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = nnx.merge(trained.model_def.graphdef, trained.params["encoder"])
    save_pretrained(encoder, trained.tokenizer, out_dir)
    heads = flatten(trained.params["heads"])
    save_file(heads, out_dir / HEADS_FILE, metadata={"format": FORMAT})
    labels = head_labels(trained.config)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "task": trained.config.get("task", "emotion"),
        "heads": {
            name: {"size": size, "labels": labels.get(name)}
            for name, size in _head_sizes(trained.model_def).items()
        },
        "parameters": {name: list(value.shape) for name, value in heads.items()},
        "head_dropout": trained.model_def.head_dropout,
        "affect": trained.config.affect.to_dict(),
        "config": json.loads(to_json(trained.config)),
        "step": trained.step,
        "source_workdir": str(trained.workdir),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def load_export(export_dir: str | Path) -> TrainedModel:
    """Rebuilds the model of an export folder (encoder from its HF files, heads from
    heads.safetensors)."""
    from safetensors.numpy import load_file

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
    model_def, params, tokenizer = build_for_config(config)
    heads = unflatten(load_file(export_dir / HEADS_FILE))
    expected = {k: v.shape for k, v in flatten(params["heads"]).items()}
    found = {k: v.shape for k, v in flatten(heads).items()}
    if expected != found:
        raise ValueError(f"{export_dir / HEADS_FILE}: head parameters {found} != {expected}")
    params["heads"] = heads
    tables = build_affect_tables(config.affect) if primary_output(config) == "emotion" else None
    return trained_model(
        config=config,
        model_def=model_def,
        params=params,
        tokenizer=tokenizer,
        tables=tables,
        step=int(meta["step"]),
        workdir=export_dir,
    )


def main(argv=None) -> None:
    from cmhl_jax.cli import setup_logging

    parser = argparse.ArgumentParser(description="Export a trained workdir (HF encoder + heads).")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True, help="export folder")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    args = parser.parse_args(argv)
    setup_logging()
    checkpoint = args.checkpoint
    if checkpoint not in ("best", "latest") and not checkpoint.isdigit():
        parser.error(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
    out = export(load_trained(args.workdir, checkpoint), args.out)
    print(json.dumps({"export_dir": str(out), "files": sorted(p.name for p in out.iterdir())}))


if __name__ == "__main__":
    main()
