"""Config files (Python files with `get_config()`), command-line overrides and validation."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import sys
from pathlib import Path

import ml_collections


class ConfigError(ValueError):
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


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, name + "."))
    return keys


def _parse_value(text: str, current, field_type):
    """Parses `text` as the type of the field it replaces."""
    if field_type is bool or isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if field_type in (int, float):
        return field_type(text)
    if isinstance(current, int | float):
        return type(current)(text)
    if isinstance(current, tuple | list):
        value = ast.literal_eval(text if text.strip()[:1] in "([" else f"({text},)")
        return type(current)(value)
    if isinstance(current, dict | ml_collections.ConfigDict):
        return json.loads(text)
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]):
    """Applies `a.b=value` overrides; an unknown key is an error listing close matches."""
    known = _all_keys(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like --config.{key}=VALUE")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        field_type = None
        field = node.get_ref(leaf) if hasattr(node, "get_ref") else None
        if field is not None:
            field_type = field.get_type()
        try:
            value = _parse_value(text, node[leaf], field_type)
        except (ValueError, SyntaxError) as err:
            raise ConfigError(f"--config.{key}: cannot parse {text!r}: {err}") from None
        with config.ignore_type():
            node[leaf] = value
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
    if config.task == "emotion":
        from cmhl_jax.losses import EXCLUSIVITY_VARIANTS

        _check(
            errors,
            loss.variant in EXCLUSIVITY_VARIANTS,
            f"loss.variant must be one of {EXCLUSIVITY_VARIANTS}, got {loss.variant!r}",
        )
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
