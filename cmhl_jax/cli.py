"""Shared command-line handling: `--config FILE --workdir DIR [--config.a.b=value ...]`."""

from __future__ import annotations

import argparse
import logging
import sys

from cmhl_jax.config import ConfigError, apply_overrides, load_config


def config_overrides(parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
    """The `a.b=value` overrides among the unparsed arguments; anything else is an error."""
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument {item!r} (overrides look like --config.a.b=v)")
        overrides.append(item.removeprefix("--config."))
    return overrides


def parse_train_args(argv: list[str] | None = None):
    """Returns (config, workdir) from the train command line; exits with a message on error."""
    parser = argparse.ArgumentParser(
        description="Train a CMHL model.",
        epilog="Any config field can be overridden: --config.optim.lr=3e-5 --config.max_steps=50",
    )
    parser.add_argument("--config", required=True, help="config file, e.g. configs/default.py")
    parser.add_argument("--workdir", required=True, help="output directory (resumes if present)")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    try:
        config = apply_overrides(load_config(args.config), overrides)
    except ConfigError as err:
        parser.error(str(err))
    return config, args.workdir


def setup_logging() -> None:
    """INFO lines on stderr in one format. Imports (absl via orbax) may already have put their
    own handlers on the root logger at WARNING, which would make basicConfig a no-op and hide
    INFO lines ("resumed from step"): those plain stderr handlers are replaced, while handlers
    installed by others (pytest's caplog, files) are kept."""
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
