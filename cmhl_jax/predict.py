"""Predict emotions for raw texts with a trained workdir or an export folder.

    python -m cmhl_jax.predict --workdir runs/minilm "i feel great" "so angry right now"
    python -m cmhl_jax.predict --workdir runs/minilm --input texts.txt --output preds.jsonl
    python -m cmhl_jax.predict --export exports/minilm --input - < texts.txt

One JSON object a line: text, emotion, confidence, probabilities (per emotion), valence and
intensity (with their probabilities), and consistency (`metrics.consistency_score`: 1 = no
positive/negative contradiction). `--input` reads one text a line (UTF-8; a line that is not
valid UTF-8 is an error naming it, or is decoded with U+FFFD replacements under
`--encoding-errors replace`).

Python:

    from cmhl_jax.predict import Predictor
    predictor = Predictor.from_workdir("runs/minilm")      # or Predictor.from_export(DIR)
    predictor.predict(["i feel great"])  # -> [{"text": ..., "emotion": "joy", ...}]

Texts go through `cmhl_jax.data` (tokenise, length buckets or packing, fixed batch rows), so
every batch has one of a few static shapes and each is compiled once.
"""

from __future__ import annotations

if __name__ == "__main__":
    from cmhl_jax.runtime import ensure_fast_runtime

    ensure_fast_runtime()  # jemalloc + XLA flags; must run before jax is imported

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cmhl_jax import data as data_lib  # noqa: E402

log = logging.getLogger("cmhl_jax")

# Characters kept before tokenising: the first max_length tokens of any text that is not
# mostly whitespace or control characters come from far fewer characters than this.
DEFAULT_MAX_CHARS = 20_000
CHUNK_TEXTS = 8192  # texts tokenised and scored per call (bounds host memory)


class InputError(ValueError):
    """An input text or file that cannot be read; the message names the line."""


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
        from cmhl_jax.export import head_labels, primary_output
        from cmhl_jax.step import Parallel, predict_step

        self.trained = trained
        self.config = trained.config
        self.tables = trained.tables
        self.tokenizer = trained.tokenizer
        if self.tokenizer is None:
            raise ValueError(f"{trained.workdir}: the model has no tokenizer")
        self.batch_size = int(batch_size or self.config.eval_batch_size)
        self.max_chars = int(max_chars)
        self.head_labels = head_labels(self.config)
        self.primary = primary_output(self.config)
        self.parallel = Parallel(
            "single", predict_fn=functools.partial(predict_step, model_def=trained.model_def)
        )
        self.params = self.parallel.put_params(trained.params)
        self.positive_ids = self.negative_ids = None
        if self.primary == "emotion" and self.tables is not None:
            mask = np.asarray(self.tables.pair_mask)
            self.positive_ids = [int(i) for i in np.flatnonzero(mask.any(1))]
            self.negative_ids = [int(j) for j in np.flatnonzero(mask.any(0))]

    @classmethod
    def from_workdir(cls, workdir, checkpoint: str | int = "best", **kwargs) -> Predictor:
        from cmhl_jax.evaluate import load_trained

        return cls(load_trained(workdir, checkpoint), **kwargs)

    @classmethod
    def from_export(cls, export_dir, **kwargs) -> Predictor:
        from cmhl_jax.export import load_export

        return cls(load_export(export_dir), **kwargs)

    @property
    def compiles(self) -> int:
        """Distinct batch shapes compiled so far (one per bucket / packed row length)."""
        return self.parallel.compiles

    def predict_arrays(self, texts: Sequence) -> dict[str, np.ndarray]:
        """Every model output for `texts`, in order: {"emotion": [N, C], ...}."""
        from cmhl_jax.evaluate import predict_all

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
        """One JSON-ready dict per text from `predict_arrays` outputs.

        The primary output gives the prediction (key `emotion` for the emotion task,
        `prediction` otherwise), `confidence` and `probabilities`; every other classifier
        output gives `<name>` (its argmax label) and `<name>_probabilities`; outputs without
        label names (e.g. the mental-health model's `gate` weights) are included as lists
        under their own name. The emotion task adds `consistency`.
        """
        if not len(texts):
            return []
        result = [{"text": _printable(t if isinstance(t, str) else clean_text(t))} for t in texts]
        order = sorted(outputs, key=lambda name: name != self.primary)
        for name in order:
            value = outputs[name]
            labels = self.head_labels.get(name)
            rounded = value.astype(np.float64).round(6)
            if labels is None:
                for record, row in zip(result, rounded.tolist(), strict=True):
                    record[name] = row
                continue
            top = value.argmax(-1)
            primary = name == self.primary
            key = "emotion" if primary and name == "emotion" else "prediction" if primary else name
            probs_key = "probabilities" if primary else f"{name}_probabilities"
            for i, record in enumerate(result):
                record[key] = labels[int(top[i])]
                if primary:
                    record["confidence"] = round(float(value[i, top[i]]), 6)
                record[probs_key] = dict(zip(labels, rounded[i].tolist(), strict=True))
        if self.positive_ids and self.negative_ids and self.primary in outputs:
            from cmhl_jax.metrics import consistency_score

            scores = consistency_score(outputs[self.primary], self.positive_ids, self.negative_ids)
            for record, score in zip(result, scores.tolist(), strict=True):
                record["consistency"] = round(score, 6)
        return result

    def predict(self, texts: Sequence | str) -> list[dict]:
        """Predictions for a list of texts (str or bytes), one dict per text, in order."""
        if isinstance(texts, str | bytes):
            texts = [texts]
        texts = list(texts)
        return self.records(texts, self.predict_arrays(texts))


# ------------------------------------------------------------------------------------------
# Command line


def read_lines(path: str, errors: str = "strict") -> list[str]:
    """One text per line (`\\n`, `\\r\\n` or `\\r`); UTF-8 (BOM dropped). With
    errors="strict" a line that is not UTF-8 raises InputError naming it; "replace" decodes
    it with U+FFFD."""
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        encoding = "utf-8-sig" if number == 1 else "utf-8"
        try:
            lines.append(line.decode(encoding))
        except UnicodeDecodeError as err:
            if errors != "replace":
                raise InputError(
                    f"{path}:{number}: not valid UTF-8 (byte {err.start} of the line); "
                    "fix the file or pass --encoding-errors replace"
                ) from None
            lines.append(line.decode(encoding, errors="replace"))
    return lines


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_jsonl(records: Iterable[dict], stream) -> int:
    count = 0
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def main(argv=None) -> int:
    from cmhl_jax.cli import setup_logging

    parser = argparse.ArgumentParser(
        description="Predict emotions (and valence, intensity, consistency) for texts."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a training workdir")
    source.add_argument("--export", help="an export folder (python -m cmhl_jax.export)")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--input", help="file with one text a line ('-': stdin)")
    parser.add_argument("--output", help="JSON-lines output file (default: stdout)")
    parser.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="a non-UTF-8 line in --input: strict = error naming the line, replace = U+FFFD",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batch")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    args = parser.parse_args(argv)
    if not args.texts and not args.input:
        parser.error("give texts as arguments or --input FILE")
    if args.texts and args.input:
        parser.error("give texts as arguments or --input FILE, not both")
    checkpoint = args.checkpoint
    if checkpoint not in ("best", "latest") and not checkpoint.isdigit():
        parser.error(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
    setup_logging()
    try:
        texts = read_lines(args.input, args.encoding_errors) if args.input else args.texts
    except (InputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.workdir:
        predictor = Predictor.from_workdir(
            args.workdir, checkpoint, batch_size=args.batch_size, max_chars=args.max_chars
        )
    else:
        predictor = Predictor.from_export(
            args.export, batch_size=args.batch_size, max_chars=args.max_chars
        )
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    start = time.perf_counter()
    count = 0
    try:
        for chunk in _chunks(texts, CHUNK_TEXTS):
            count += write_jsonl(predictor.predict(chunk), out)
            out.flush()
    finally:
        if args.output:
            out.close()
    seconds = time.perf_counter() - start
    log.info(
        "%d texts in %.1f s (%.0f texts/min, %d compiled shapes)",
        count,
        seconds,
        60 * count / max(seconds, 1e-9),
        predictor.compiles,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
