"""The run's metrics history: `<workdir>/metrics.jsonl` and optional TensorBoard events.

`MetricsWriter` takes metric dicts (train records and the `val_*` records of each epoch end)
and writes each as one JSON line and, with `config.log.tensorboard = True` (tensorboardX,
`pip install 'cmhl-jax[tensorboard]'`), as scalars under `train/` and `val/` at their `step`.
A resumed run first drops the records of steps after its restored checkpoint, so every step
appears at most once: the JSONL file is rewritten atomically, and TensorBoard is told to purge
the events after that step. `read_scalars(dir)` reads event files back without TensorFlow.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from etils import epath

_SKIP = ("step", "epoch")


def truncate_history(path: epath.Path, last_step: int) -> int:
    """Rewrites `path` without the records of steps after `last_step` (atomically: a crash
    leaves the old or the new file); returns how many records were dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= last_step]
    dropped = sum(1 for line in lines if line.strip()) - len(kept)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
    return dropped


class MetricsWriter:
    """One stream of metric dicts into metrics.jsonl (and TensorBoard when configured)."""

    def __init__(self, workdir: str | Path, config, *, resume_step: int = 0):
        workdir = epath.Path(workdir)  # a local folder or a URL (gs://...)
        self.path = workdir / "metrics.jsonl"
        self.dropped = truncate_history(self.path, resume_step)
        self._file = self.path.open("a")
        self._tensorboard = None
        if config.get("log", {}).get("tensorboard", False):
            try:
                from tensorboardX import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    "config.log.tensorboard=True needs tensorboardX: pip install tensorboardX"
                ) from err
            # purge_step: TensorBoard discards earlier-written events at steps >= it. The
            # suffix keeps a quick restart from reusing (and truncating) the last file's name.
            self._tensorboard = SummaryWriter(
                logdir=str(workdir / "tensorboard"),
                purge_step=resume_step + 1 if resume_step else None,
                filename_suffix=f".from{resume_step}",
            )

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            step = int(record["step"])
            for key, value in record.items():
                if key in _SKIP or not isinstance(value, int | float):
                    continue
                tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
                self._tensorboard.add_scalar(tag, float(value), step)
            self._tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _records(path: Path):
    """The payloads of a TFRecord file (length, length crc, data, data crc)."""
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 12
        yield data[offset : offset + length]
        offset += length + 4


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from the event files under `logdir`, in write order, with
    TensorBoard's purge applied (a session restart at step s drops earlier events >= s)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for payload in _records(path):
            event = event_pb2.Event()
            event.ParseFromString(payload)
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                for tag, points in scalars.items():
                    scalars[tag] = [(s, v) for s, v in points if s < event.step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars
