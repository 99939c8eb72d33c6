"""Evaluation of a trained workdir: restore a checkpoint, score a split, write reports."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from cmhl_jax import data as data_lib
from cmhl_jax.checkpoint import Checkpoints
from cmhl_jax.model import ModelDef, build_model
from cmhl_jax.parallel import Parallel
from cmhl_jax.paths import workdir_path
from cmhl_jax.step import init_train_state, make_optimizer, predict_step
from cmhl_jax.tasks import Task, make_task
from cmhl_jax.tasks.emotion.affect import AffectTables


@dataclasses.dataclass
class TrainedModel:
    """A restored model: config, static model definition, params and tokenizer."""

    config: ml_collections.ConfigDict
    model_def: ModelDef
    params: dict
    tokenizer: object
    step: int
    workdir: Path
    # The restored checkpoint's validation report (values fixed on val, e.g. tuned thresholds).
    val_report: dict | None = None

    @property
    def task(self) -> Task:
        return self.model_def.task

    @property
    def tables(self) -> AffectTables | None:
        """The emotion task's affect tables (None for other tasks)."""
        return self.task.tables


def load_config_json(workdir: str | Path) -> ml_collections.ConfigDict:
    path = workdir_path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_trained(workdir: str | Path, checkpoint: str | int = "best") -> TrainedModel:
    """Rebuilds the model of a workdir and restores the chosen checkpoint's parameters."""
    workdir = workdir_path(workdir)  # a local folder or a URL (gs://...)
    config = load_config_json(workdir)
    model_def, params, tokenizer = build_model(config.model, make_task(config), seed=config.seed)
    tx, _ = make_optimizer(config.optim, 1)
    target = jax.device_get(init_train_state(params, tx, config.seed))
    checkpoints = Checkpoints(
        workdir, keep_best=config.checkpoint.keep_best, metric=config.checkpoint.metric
    )
    state, meta = checkpoints.restore(checkpoint, target, fingerprint=model_def.fingerprint())
    return TrainedModel(
        config,
        model_def,
        state.params,
        tokenizer,
        int(state.step),
        workdir,
        val_report=(meta or {}).get("val"),
    )


def data_spec(spec: str, config) -> str:
    """`--data` accepts a file path, `hf:NAME[:CONFIG]:SPLIT`, `tfds:NAME[:SPLIT]`, or a split
    name of the training data source (e.g. `validation`)."""
    if spec.startswith(("hf:", "tfds:")) or Path(spec).exists():
        return spec
    return data_lib.split_spec(config.data, spec)


def predict_all(parallel: Parallel, params, token_ids, labels, *, batch_size, pad_id, data_cfg):
    """Head probabilities for every example, in example order; each scored exactly once."""
    out: dict[str, np.ndarray] = {}
    seen = np.zeros(len(token_ids), bool)
    rows = batch_size * jax.process_count()
    options = data_lib.BatchOptions.from_config(data_cfg)
    for batch in data_lib.eval_batches(
        token_ids, labels, options=options, batch_size=rows, pad_id=pad_id
    ):
        local = data_lib.shard_batch(batch, jax.process_count(), jax.process_index())
        probs = parallel.predict(params, local)
        index = batch["example_index"].reshape(-1)
        real = index >= 0
        for name, value in probs.items():
            flat = value.reshape(-1, value.shape[-1])
            out.setdefault(name, np.zeros((len(token_ids), flat.shape[-1]), np.float32))
            out[name][index[real]] = flat[real]
        seen[index[real]] = True
    if not seen.all():
        raise RuntimeError(f"evaluation missed {int((~seen).sum())} examples")
    return out


def evaluate_split(trained: TrainedModel, spec: str, *, batch_size: int | None = None):
    """Scores one split; returns (report, examples, probs)."""
    config = trained.config
    examples = data_lib.load_split(
        data_spec(spec, config),
        list(trained.task.label_names),
        skip_bad_lines=config.data.skip_bad_lines,
    )
    token_ids = data_lib.tokenize_split(examples, trained.tokenizer, config.data, cache_dir=None)
    parallel = Parallel(
        "single", predict_fn=functools.partial(predict_step, model_def=trained.model_def)
    )
    probs = predict_all(
        parallel,
        parallel.put(trained.params),
        token_ids,
        examples.labels,
        batch_size=batch_size or config.eval_batch_size,
        pad_id=int(trained.tokenizer.pad_token_id),
        data_cfg=config.data,
    )
    report = trained.task.report(probs, examples.labels, reference=trained.val_report)
    return report, examples, probs


def write_predictions(path: Path, trained: TrainedModel, examples, probs: dict) -> None:
    """One JSON object a line: the text, its gold label and the task's prediction record."""
    task = trained.task
    with path.open("w") as f:
        rows = zip(examples.texts, examples.labels, task.records(probs), strict=True)
        for text, label, record in rows:
            f.write(json.dumps({"text": text, "label": task.gold_record(label), **record}) + "\n")
