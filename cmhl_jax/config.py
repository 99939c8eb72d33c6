"""Config files (Python files with `get_config()`), command-line overrides and validation."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from pathlib import Path

import ml_collections

from cmhl_jax.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file, override or value that cannot be used; the message says which."""


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Imports a config file and returns its `get_config()`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    # Config files import their siblings as `configs.<name>`: put the folder above on the path.
    root = str(path.resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_cmhl_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config()")
    return module.get_config()


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted key of a config, nested blocks included."""
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(all_keys(value, name + "."))
    return keys


# New keys may be added under these blocks from the command line: a plug-in loss reads its own
# hyper-parameters from `--config.loss.<name>=value` (see cmhl_jax/losses.py).
EXTENSIBLE_BLOCKS = ("loss",)


def split_new_fields(config, overrides: list[str]) -> tuple[list[str], dict[str, object]]:
    """Separates the overrides that add a plug-in loss's field (`loss.gamma=2`, accepted when
    `loss.fn` names a MODULE:FUNCTION plug-in and the name is not a near-miss of a known key)
    from those that change an existing field. New values are parsed as Python literals (a
    number, true/false, a quoted or bare string)."""
    known, kept, new = set(all_keys(config)), [], {}
    items = dict(item.partition("=")[::2] for item in overrides)
    plugin = ":" in str(items.get("loss.fn", config.get("loss", {}).get("fn", "")))
    for item in overrides:
        key, _, text = item.partition("=")
        block, _, leaf = key.rpartition(".")
        near_miss = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if plugin and key not in known and block in EXTENSIBLE_BLOCKS and not near_miss:
            lowered = {"true": "True", "false": "False"}.get(text.lower(), text)
            try:
                new[key] = ast.literal_eval(lowered)
            except (ValueError, SyntaxError):
                new[key] = text
        else:
            kept.append(item)
    return kept, new


def check_overrides(config, overrides: list[str], source: str) -> tuple[list[str], dict]:
    """`split_new_fields`, after rejecting unknown keys with close matches in the message."""
    kept, new = split_new_fields(config, overrides)
    known = all_keys(config)
    for item in kept:
        key = item.partition("=")[0]
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r} in {source}{hint}")
    return kept, new


def add_fields(config: ml_collections.ConfigDict, fields: dict[str, object]) -> None:
    for key, value in fields.items():
        block, _, leaf = key.rpartition(".")
        with config[block].unlocked():
            config[block][leaf] = value


def override(path: str | Path, overrides: list[str]) -> ml_collections.ConfigDict:
    """The config file `path` with `a.b=value` overrides applied by ml_collections'
    config_flags (the parser train.py uses), e.g. for the arms of an ablation."""
    from absl import flags
    from ml_collections import config_flags

    config = load_config(path)
    kept, new = check_overrides(config, overrides, str(path))
    argv = ["override", *(f"--config.{item}" for item in kept)]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as err:
        raise ConfigError(str(err)) from None
    config = flag_values.config
    add_fields(config, new)
    return config


def _check(errors: list[str], ok: bool, message: str) -> None:
    if not ok:
        errors.append(message)


# Numeric fields: (dotted key, integer only). A value of another type (e.g. a string from a
# config file) is reported as such instead of failing inside a range check.
_NUMERIC_FIELDS = (
    ("seed", True),
    ("batch_size", True),
    ("eval_batch_size", True),
    ("num_epochs", True),
    ("max_steps", True),
    ("log_every", True),
    ("optim.lr", False),
    ("optim.weight_decay", False),
    ("optim.warmup_frac", False),
    ("optim.b1", False),
    ("optim.b2", False),
    ("optim.eps", False),
    ("optim.grad_clip", False),
    ("optim.accum_steps", True),
    ("loss.alpha", False),
    ("loss.beta", False),
    ("loss.lam", False),
    ("data.max_length", True),
    ("checkpoint.keep_best", True),
    ("checkpoint.every_steps", True),
    ("model.head_dropout", False),
)


_MISSING = object()


def _get(config, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict | ml_collections.ConfigDict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _type_errors(config: ml_collections.ConfigDict) -> list[str]:
    errors = []
    for key, integer in _NUMERIC_FIELDS:
        value = _get(config, key)
        if value is _MISSING:
            continue
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            want = "an integer" if integer else "a number"
            errors.append(f"{key} must be {want}, got {value!r} ({type(value).__name__})")
        elif not integer and value != value:  # NaN passes every range check otherwise
            errors.append(f"{key} must be a number, got nan")
    buckets = _get(config, "data.buckets")
    if buckets is not _MISSING and (
        not isinstance(buckets, tuple | list)
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets)
    ):
        errors.append(f"data.buckets must be a sequence of positive integers, got {buckets!r}")
    return errors


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks types and ranges; raises one ConfigError listing every problem."""
    errors = _type_errors(config)
    if errors:  # ranges cannot be checked on values of the wrong type
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    optim, loss, data = config.optim, config.loss, config.data
    _check(errors, optim.lr > 0, f"optim.lr must be > 0, got {optim.lr}")
    _check(errors, optim.weight_decay >= 0, "optim.weight_decay must be >= 0")
    _check(errors, 0 <= optim.warmup_frac < 1, "optim.warmup_frac must be in [0, 1)")
    _check(errors, optim.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 disables)")
    _check(errors, int(optim.accum_steps) >= 1, "optim.accum_steps must be >= 1")
    _check(errors, 0 <= optim.b1 < 1 and 0 <= optim.b2 < 1, "optim.b1 and optim.b2: [0, 1)")
    _check(errors, optim.eps > 0, f"optim.eps must be > 0, got {optim.eps}")
    for name in ("alpha", "beta", "lam"):
        _check(errors, loss[name] >= 0, f"loss.{name} must be >= 0, got {loss[name]}")
    buckets = list(data.buckets)
    _check(errors, buckets == sorted(set(buckets)), f"data.buckets must be sorted: {buckets}")
    _check(
        errors,
        bool(buckets) and buckets[-1] >= data.max_length,
        f"data.buckets {buckets} must cover data.max_length={data.max_length}",
    )
    if data.pack:
        _check(errors, data.pack_len >= 8, "data.pack_len must be >= 8")
        _check(errors, data.max_texts_per_row >= 1, "data.max_texts_per_row must be >= 1")
    _check(errors, data.truncation in ("head", "head_tail"), "data.truncation: head|head_tail")
    _check(errors, data.max_length >= 2, f"data.max_length must be >= 2, got {data.max_length}")
    _check(errors, config.batch_size >= 1, "batch_size must be >= 1")
    _check(errors, config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}")
    _check(
        errors,
        config.checkpoint.every_steps >= 0,
        "checkpoint.every_steps must be >= 0 (0: epoch ends only)",
    )
    _check(errors, config.eval_batch_size >= 1, "eval_batch_size must be >= 1")
    _check(errors, config.num_epochs >= 1, "num_epochs must be >= 1")
    _check(errors, 0 <= config.model.head_dropout < 1, "model.head_dropout must be in [0, 1)")
    _check(
        errors,
        config.model.dtype in ("float32", "bfloat16"),
        f"model.dtype must be float32 or bfloat16, got {config.model.dtype!r}",
    )
    matmul = config.model.get("matmul_dtype", "float32")
    _check(
        errors,
        matmul == "float32" or (matmul == "bfloat16" and config.model.dtype == "float32"),
        f"model.matmul_dtype must be float32, or bfloat16 with model.dtype=float32; got "
        f"{matmul!r} with model.dtype={config.model.dtype!r}",
    )
    _check(
        errors,
        config.parallel.mode in ("pmap", "mesh", "single"),
        f"parallel.mode must be pmap, mesh or single, got {config.parallel.mode!r}",
    )
    _check(errors, config.checkpoint.keep_best >= 1, "checkpoint.keep_best must be >= 1")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as JSON (written to <workdir>/config.json)."""
    return config.to_json_best_effort(indent=2, sort_keys=True)
