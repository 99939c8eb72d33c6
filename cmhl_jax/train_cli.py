"""Train a CMHL model.

    cmhl-train --config configs/emotion_minilm.py --workdir runs/minilm \
        --config.data.local_dir=../shared/data/emotion

(`python train.py ...` from a checkout is the same command.) The workdir may be a local folder
or any URL Orbax and `etils.epath` support (`gs://bucket/run`).
"""

import sys

from absl import flags

from cmhl_jax import cli
from cmhl_jax.loop import train_and_evaluate
from cmhl_jax.runtime import ensure_fast_runtime

FLAGS = flags.FlagValues()
_CONFIG = cli.define_config_flag(FLAGS)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "output directory; a workdir with checkpoints resumes", flag_values=FLAGS
)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)

__all__ = ["train_and_evaluate"]


def main(argv: list[str] | None = None) -> int:
    """`train.py` and the `cmhl-train` command."""
    prog = cli.prog_name("train.py")
    if rest := cli.parse(FLAGS, argv, prog, __doc__):
        cli.usage_error(prog, f"unexpected arguments: {' '.join(rest)}")
    ensure_fast_runtime()  # a fast allocator (mimalloc or jemalloc), XLA flags: before computing
    cli.setup_logging()
    with cli.user_errors(prog):
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
