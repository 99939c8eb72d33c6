"""Command-line plumbing shared by the entry points.

Flags are absl flags, one `FlagValues` per tool; the config is an `ml_collections.config_flags`
config file flag, as in the Flax examples: `--config FILE --config.a.b=value`. On top of the
library this adds a one-line error with close matches for an unknown `--config.*` key,
config files that import their siblings (`from configs import default`), logging in one
format, and one-line errors without a traceback for the problems a user can fix
(`cmhl_jax.errors.UserError`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from cmhl_jax.config import ConfigError, add_fields, check_overrides, load_config
from cmhl_jax.errors import UserError

# Errors a user can fix that come from outside the package.
OS_USER_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError)


def define_config_flag(flag_values: flags.FlagValues, sys_argv: list[str] | None = None):
    """The `--config FILE` flag with `--config.a.b=value` overrides. config_flags finds the
    overrides in `sys_argv` (default: sys.argv), so `parse` defines it again for each argv."""
    for name in list(flag_values):  # the flag and the override flags of an earlier parse
        if name == "config" or name.startswith("config."):
            delattr(flag_values, name)
    return config_flags.DEFINE_config_file(
        "config",
        None,
        "config file (a Python file with get_config()); override any field with --config.a.b=value",
        flag_values=flag_values,
        sys_argv=sys_argv,
    )


def define_checkpoint_flag(flag_values: flags.FlagValues):
    """`--checkpoint best|latest|STEP` of the tools that read a workdir."""
    holder = flags.DEFINE_string(
        "checkpoint", "best", "best, latest or a step number", flag_values=flag_values
    )
    flags.register_validator(
        "checkpoint",
        lambda value: value in ("best", "latest") or value.isdigit(),
        "--checkpoint must be best, latest or a step number",
        flag_values=flag_values,
    )
    return holder


def _config_path(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _overrides(argv: Sequence[str], name: str) -> list[tuple[int, str]]:
    """(position, "a.b=value") of each `--name.a.b=value` argument."""
    prefix = f"--{name}."
    return [(i, arg[len(prefix) :]) for i, arg in enumerate(argv) if arg.startswith(prefix)]


def prepare_config_args(argv: list[str]) -> tuple[list[str], dict]:
    """Loads the config file named on the command line (which also makes its project root
    importable for the config flag), rejects unknown override keys with close matches, and
    takes out the overrides that add a plug-in's field (`--config.loss.gamma=2`): returns
    (the remaining argv, {key: value} to add after parsing)."""
    path = _config_path(argv, "config")
    if path is None:
        return argv, {}
    overrides = _overrides(argv, "config")
    _, new = check_overrides(load_config(path), [item for _, item in overrides], path)
    drop = {i for i, item in overrides if item.split("=", 1)[0] in new}
    return [arg for i, arg in enumerate(argv) if i not in drop], new


def parse(flag_values: flags.FlagValues, argv: Sequence[str] | None, prog: str, doc: str):
    """Parses a tool's own flags (each tool has its own FlagValues, so the tools can be
    imported together and their `main(argv)` called in-process). Prints the help for
    `--help`; a bad flag, config file or override key is one line and exit status 2.
    Returns the positional arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv):
        sys.stdout.write(f"usage: {prog} [flags]\n\n{doc.strip()}\n\n{flag_values}\n")
        sys.exit(0)
    flag_values.unparse_flags()
    try:
        new_fields = {}
        if "config" in flag_values:
            argv, new_fields = prepare_config_args(argv)
            define_config_flag(flag_values, sys_argv=[prog, *argv])
        with warnings.catch_warnings():  # config_flags loads the file with load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = flag_values([prog, *argv])
        if new_fields:
            add_fields(flag_values["config"].value, new_fields)
    except (flags.Error, ConfigError) as err:
        sys.stderr.write(f"{prog}: error: {err}\nPass --help to see the flags.\n")
        sys.exit(2)
    return rest[1:]


def prog_name(script: str) -> str:
    """The name a command reports itself by: its console script (`cmhl-train`) when run as
    one, else `script` (`train.py`, also when `main(argv)` is called in-process)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("cmhl-") else script


def usage_error(prog: str, message: str):
    sys.stderr.write(f"{prog}: error: {message}\nPass --help to see the flags.\n")
    sys.exit(2)


@contextlib.contextmanager
def user_errors(prog: str):
    """Turns a UserError (or a missing/unreadable file) into one line on stderr and exit 1."""
    try:
        yield
    except (UserError, *OS_USER_ERRORS) as err:
        sys.stderr.write(f"{prog}: error: {type(err).__name__}: {err}\n")
        sys.exit(1)


class _NoTorchNotice(logging.Filter):
    """Drops transformers' import-time "PyTorch was not found" notice: cmhl-jax runs its models
    in JAX and uses transformers for tokenizers and configs only, which need no PyTorch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PyTorch was not found")


def setup_logging() -> None:
    """INFO lines on stderr in one format. Imports (absl via orbax) may already have put their
    own handlers on the root logger at WARNING, which would make basicConfig a no-op and hide
    INFO lines ("resumed from step"): those plain stderr handlers are replaced, while handlers
    installed by others (pytest's caplog, files) are kept. Transformers' "PyTorch was not
    found" notice is dropped (the commands import transformers later, when they load a
    tokenizer)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "ABSLHandler" or (
            type(handler) is logging.StreamHandler and handler.stream is sys.stderr
        ):
            root.removeHandler(handler)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root.setLevel(logging.INFO)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Each retry of an unreachable Hub is a warning, twice; what failed is reported once, as
    # the command's one-line error.
    logging.getLogger("huggingface_hub.utils._http").setLevel(logging.ERROR)
    # On the "transformers" logger itself; its other messages are untouched.
    transformers_log = logging.getLogger("transformers")
    if not any(isinstance(f, _NoTorchNotice) for f in transformers_log.filters):
        transformers_log.addFilter(_NoTorchNotice())
