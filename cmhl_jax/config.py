"""Config files (Python files with `get_config()`), command-line overrides and validation."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

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
    try:
        return module.get_config()
    except TypeError as err:  # a value of another type than the field's (ml_collections)
        raise ConfigError(f"{path}: {err}") from None


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


def check(errors: list[str], ok: bool, message: str) -> None:
    """Appends `message` to `errors` unless `ok` (checks are written so that NaN fails)."""
    if not ok:
        errors.append(message)


def generic_problems(config: ml_collections.ConfigDict) -> list[str]:
    """The meaning checks of the blocks every task has (model, data, optim, parallel,
    checkpoint, eval, log); each message names its field. Types are kept by ml_collections:
    a field's type is the default's (an override is parsed as that type, a value of another
    type is refused on assignment)."""
    errors: list[str] = []
    optim, data, model = config.optim, config.data, config.model
    check(errors, optim.lr > 0, f"optim.lr must be > 0, got {optim.lr}")
    check(errors, optim.weight_decay >= 0, "optim.weight_decay must be >= 0")
    check(errors, 0 <= optim.warmup_frac < 1, "optim.warmup_frac must be in [0, 1)")
    check(errors, optim.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 disables)")
    check(errors, optim.accum_steps >= 1, "optim.accum_steps must be >= 1")
    check(errors, 0 <= optim.b1 < 1 and 0 <= optim.b2 < 1, "optim.b1 and optim.b2: [0, 1)")
    check(errors, optim.eps > 0, f"optim.eps must be > 0, got {optim.eps}")
    buckets = list(data.buckets)
    check(errors, buckets == sorted(set(buckets)), f"data.buckets must be sorted: {buckets}")
    check(
        errors,
        bool(buckets) and buckets[-1] >= data.max_length,
        f"data.buckets {buckets} must cover data.max_length={data.max_length}",
    )
    if data.pack:
        check(errors, data.pack_len >= 8, "data.pack_len must be >= 8")
        check(errors, data.max_texts_per_row >= 1, "data.max_texts_per_row must be >= 1")
    check(errors, data.truncation in ("head", "head_tail"), "data.truncation: head|head_tail")
    check(errors, data.max_length >= 2, f"data.max_length must be >= 2, got {data.max_length}")
    check(errors, config.batch_size >= 1, "batch_size must be >= 1")
    check(errors, config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}")
    check(
        errors,
        config.checkpoint.every_steps >= 0,
        "checkpoint.every_steps must be >= 0 (0: epoch ends only)",
    )
    check(errors, config.eval_batch_size >= 1, "eval_batch_size must be >= 1")
    check(errors, config.num_epochs >= 1, "num_epochs must be >= 1")
    check(errors, config.eval.ece_bins >= 1, "eval.ece_bins must be >= 1")
    check(errors, 0 <= model.head_dropout < 1, "model.head_dropout must be in [0, 1)")
    check(
        errors,
        model.dtype in ("float32", "bfloat16"),
        f"model.dtype must be float32 or bfloat16, got {model.dtype!r}",
    )
    matmul = model.get("matmul_dtype", "float32")
    check(
        errors,
        matmul == "float32" or (matmul == "bfloat16" and model.dtype == "float32"),
        f"model.matmul_dtype must be float32, or bfloat16 with model.dtype=float32; got "
        f"{matmul!r} with model.dtype={model.dtype!r}",
    )
    check(
        errors,
        config.parallel.mode in ("pmap", "mesh", "single"),
        f"parallel.mode must be pmap, mesh or single, got {config.parallel.mode!r}",
    )
    check(errors, config.checkpoint.keep_best >= 1, "checkpoint.keep_best must be >= 1")
    return errors


def raise_problems(errors: list[str]) -> None:
    """One ConfigError listing every problem, if there is any."""
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as JSON (written to <workdir>/config.json)."""
    return config.to_json_best_effort(indent=2, sort_keys=True)
