"""`python -m cmhl_jax.data.tfds_builders NAME --manual_dir DIR [--data_dir DIR]`: prepare one
of the project's TFDS datasets from local files (offline)."""

from __future__ import annotations

import argparse
import sys

from cmhl_jax import cli
from cmhl_jax.data.tfds_builders import BUILDERS, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmhl_jax.data.tfds_builders",
        description="Prepare one of the project's TFDS datasets from local files (offline).",
    )
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--manual_dir", required=True, help="the folder with the source files")
    parser.add_argument("--data_dir", default=None, help="default: $TFDS_DATA_DIR")
    args = parser.parse_args(argv)
    cli.setup_logging()
    with cli.user_errors(parser.prog):
        builder = prepare(args.name, manual_dir=args.manual_dir, data_dir=args.data_dir)
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    print(f"{args.name} {builder.info.version} in {builder.data_dir}: {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
