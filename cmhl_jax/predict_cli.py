"""Predict emotions for raw texts with a trained workdir or an export folder.

    python -m cmhl_jax.predict --workdir runs/minilm "i feel great" "so angry right now"
    python -m cmhl_jax.predict --workdir runs/minilm --input texts.txt --output preds.jsonl
    python -m cmhl_jax.predict --export exports/minilm --input - < texts.txt

One JSON object a line: text, emotion, confidence, probabilities (per emotion), valence and
intensity (with their probabilities), and consistency (`metrics.consistency_score`: 1 = no
positive/negative contradiction). `--input` reads one text a line (UTF-8; a line that is not
valid UTF-8 is an error naming it, or is decoded with U+FFFD replacements under
`--encoding_errors replace`).

Python:

    from cmhl_jax.predict import Predictor
    predictor = Predictor.from_workdir("runs/minilm")      # or Predictor.from_export(DIR)
    predictor.predict(["i feel great"])  # -> [{"text": ..., "<head>": label, "confidence": ...}]

Texts go through `cmhl_jax.data` (tokenise, length buckets or packing, fixed batch rows), so
every batch has one of a few static shapes and each is compiled once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from absl import flags

from cmhl_jax import cli
from cmhl_jax.errors import UserError
from cmhl_jax.predict import CHUNK_TEXTS, DEFAULT_MAX_CHARS, Predictor
from cmhl_jax.runtime import ensure_fast_runtime

log = logging.getLogger("cmhl_jax")


class InputError(UserError, ValueError):
    """An input text or file that cannot be read; the message names the line."""


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
                    "fix the file or pass --encoding_errors replace"
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


FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string("workdir", None, "a training workdir", flag_values=FLAGS)
_EXPORT = flags.DEFINE_string("export", None, "an export folder (cmhl-export)", flag_values=FLAGS)
_CHECKPOINT = cli.define_checkpoint_flag(FLAGS)
_INPUT = flags.DEFINE_string(
    "input", None, "file with one text a line ('-': stdin)", flag_values=FLAGS
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON-lines output file (default: stdout)", flag_values=FLAGS
)
_ENCODING_ERRORS = flags.DEFINE_enum(
    "encoding_errors",
    "strict",
    ["strict", "replace"],
    "a non-UTF-8 line in --input: strict = error naming the line, replace = U+FFFD",
    flag_values=FLAGS,
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "rows per batch", lower_bound=1, flag_values=FLAGS
)
_MAX_CHARS = flags.DEFINE_integer(
    "max_chars", DEFAULT_MAX_CHARS, "characters kept per text", flag_values=FLAGS
)
flags.mark_flags_as_mutual_exclusive(["workdir", "export"], required=True, flag_values=FLAGS)


def _load_predictor() -> Predictor:
    kwargs = dict(batch_size=_BATCH_SIZE.value, max_chars=_MAX_CHARS.value)
    if _WORKDIR.value:
        return Predictor.from_workdir(_WORKDIR.value, _CHECKPOINT.value, **kwargs)
    return Predictor.from_export(_EXPORT.value, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """The `cmhl-predict` command: the texts given as arguments or in --input, one JSON
    object a line."""
    texts = cli.parse(FLAGS, argv, "cmhl-predict", __doc__)
    if bool(texts) == bool(_INPUT.value):
        cli.usage_error("cmhl-predict", "give texts as arguments or --input FILE (not both)")
    ensure_fast_runtime()
    cli.setup_logging()
    with cli.user_errors("cmhl-predict"):
        if _INPUT.value:
            texts = read_lines(_INPUT.value, _ENCODING_ERRORS.value)
        predictor = _load_predictor()
    out = open(_OUTPUT.value, "w", encoding="utf-8") if _OUTPUT.value else sys.stdout  # noqa: SIM115
    start, count = time.perf_counter(), 0
    try:
        for chunk in _chunks(texts, CHUNK_TEXTS):
            count += write_jsonl(predictor.predict(chunk), out)
            out.flush()
    finally:
        if _OUTPUT.value:
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
