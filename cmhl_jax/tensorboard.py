"""Optional TensorBoard event files next to metrics.jsonl (`config.log.tensorboard = True`).

Uses tensorboardX (`pip install 'cmhl-jax[tensorboard]'`). Train metrics go under `train/`,
validation metrics (the `val_*` keys of metrics.jsonl) under `val/`, at their `step`.
`read_scalars(dir)` reads event files back without TensorFlow or TensorBoard.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_SKIP = ("step", "epoch")


class ScalarWriter:
    """Writes each metrics.jsonl record as TensorBoard scalars."""

    def __init__(self, logdir: str | Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "config.log.tensorboard=True needs tensorboardX: pip install tensorboardX"
            ) from err
        self.logdir = Path(logdir)
        self._writer = SummaryWriter(logdir=str(self.logdir))

    def write(self, record: dict) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key in _SKIP or not isinstance(value, int | float):
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def maybe_writer(config, workdir: str | Path) -> ScalarWriter | None:
    """A writer into `<workdir>/tensorboard` when `config.log.tensorboard` is set, else None."""
    log_cfg = config.get("log", None)
    if log_cfg is None or not log_cfg.get("tensorboard", False):
        return None
    return ScalarWriter(Path(workdir) / "tensorboard")


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
    """{tag: [(step, value), ...]} from every event file under `logdir`."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for payload in _records(path):
            event = event_pb2.Event()
            event.ParseFromString(payload)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


class MetricsFile:
    """metrics.jsonl opened for appending; each JSON line written is also sent to TensorBoard
    when `config.log.tensorboard` is set (so the training loop writes one stream)."""

    def __init__(self, path: str | Path, config):
        path = Path(path)
        self._file = path.open("a")
        self._tensorboard = maybe_writer(config, path.parent)

    def write(self, text: str) -> None:
        self._file.write(text)
        if self._tensorboard is not None:
            for line in text.splitlines():
                if line.strip():
                    self._tensorboard.write(json.loads(line))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
