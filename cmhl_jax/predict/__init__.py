"""Predict emotions for raw texts with a trained workdir or an export folder: the library of
the `cmhl-predict` command (`cmhl_jax.predict_cli`).

    from cmhl_jax.predict import Predictor
    predictor = Predictor.from_workdir("runs/minilm")      # or Predictor.from_export(DIR)
    predictor.predict(["i feel great"])  # -> [{"text": ..., "<head>": label, "confidence": ...}]

One dict per text: text, emotion, confidence, probabilities (per emotion), valence and
intensity (with their probabilities), and consistency (`metrics.consistency_score`: 1 = no
positive/negative contradiction).

Texts go through `cmhl_jax.data` (tokenise, length buckets or packing, fixed batch rows), so
every batch has one of a few static shapes and each is compiled once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from cmhl_jax import data as data_lib
from cmhl_jax.evaluate import load_trained, predict_all
from cmhl_jax.export import load_export
from cmhl_jax.parallel import Parallel
from cmhl_jax.step import predict_step

# Characters kept before tokenising: the first max_length tokens of any text that is not
# mostly whitespace or control characters come from far fewer characters than this.
DEFAULT_MAX_CHARS = 20_000
CHUNK_TEXTS = 8192  # texts tokenised and scored per call (bounds host memory)


def clean_text(text, *, max_chars: int = DEFAULT_MAX_CHARS, truncation: str = "head") -> str:
    """A text the tokenizer accepts: bytes decoded (invalid UTF-8 replaced), lone surrogates
    replaced, and at most `max_chars` characters (head, or head and tail for head_tail)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"texts must be str or bytes, got {type(text).__name__}")
    if len(text) > max_chars:
        if truncation == "head_tail":
            half = max_chars // 2
            text = text[:half] + " " + text[len(text) - half :]
        else:
            text = text[:max_chars]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. from os.fsdecode of bad bytes)
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _printable(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")


class Predictor:
    """Batched inference of a trained CMHL model on raw texts."""

    def __init__(self, trained, *, batch_size: int | None = None, max_chars=DEFAULT_MAX_CHARS):
        self.trained = trained
        self.config = trained.config
        self.task = trained.task
        self.tokenizer = trained.tokenizer
        if self.tokenizer is None:
            raise ValueError(f"{trained.workdir}: the model has no tokenizer")
        self.batch_size = int(batch_size or self.config.eval_batch_size)
        self.max_chars = int(max_chars)
        self.parallel = Parallel(
            "single", predict_fn=functools.partial(predict_step, model_def=trained.model_def)
        )
        self.params = self.parallel.put(trained.params)

    @classmethod
    def from_workdir(cls, workdir, checkpoint: str | int = "best", **kwargs) -> Predictor:
        return cls(load_trained(workdir, checkpoint), **kwargs)

    @classmethod
    def from_export(cls, export_dir, **kwargs) -> Predictor:
        return cls(load_export(export_dir), **kwargs)

    @property
    def compiles(self) -> int:
        """Distinct batch shapes compiled so far (one per bucket / packed row length)."""
        return self.parallel.compiles

    def predict_arrays(self, texts: Sequence) -> dict[str, np.ndarray]:
        """Every model output for `texts`, in order: {"emotion": [N, C], ...}."""
        data_cfg = self.config.data
        cleaned = [
            clean_text(t, max_chars=self.max_chars, truncation=data_cfg.truncation) for t in texts
        ]
        outputs: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(cleaned), CHUNK_TEXTS):
            chunk = cleaned[start : start + CHUNK_TEXTS]
            token_ids = data_lib.tokenize(
                chunk, self.tokenizer, data_cfg.max_length, truncation=data_cfg.truncation
            )
            probs = predict_all(
                self.parallel,
                self.params,
                token_ids,
                np.zeros(len(chunk), np.int32),
                batch_size=self.batch_size,
                pad_id=int(self.tokenizer.pad_token_id),
                data_cfg=data_cfg,
            )
            for name, value in probs.items():
                outputs.setdefault(name, []).append(value)
        if not cleaned:
            return {}
        return {name: np.concatenate(values) for name, values in outputs.items()}

    def records(self, texts: Sequence, outputs: dict[str, np.ndarray]) -> list[dict]:
        """One JSON-ready dict per text: the text and the task's prediction record
        (`Task.records`: prediction, confidence, probabilities, the other heads, gate
        weights, and for the emotion task the consistency score)."""
        if not len(texts):
            return []
        texts = [_printable(t if isinstance(t, str) else clean_text(t)) for t in texts]
        records = self.task.records(outputs)
        return [{"text": text, **record} for text, record in zip(texts, records, strict=True)]

    def predict(self, texts: Sequence | str) -> list[dict]:
        """Predictions for a list of texts (str or bytes), one dict per text, in order."""
        if isinstance(texts, str | bytes):
            texts = [texts]
        texts = list(texts)
        return self.records(texts, self.predict_arrays(texts))
