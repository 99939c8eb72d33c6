"""Train a CMHL model.

    python train.py --config configs/emotion_minilm.py --workdir runs/minilm \
        --config.data.local_dir=../shared/data/emotion
"""

from cmhl_jax.runtime import ensure_fast_runtime

if __name__ == "__main__":
    ensure_fast_runtime()  # jemalloc + XLA flags; must run before jax is imported

import sys  # noqa: E402

from cmhl_jax.checkpoint import CheckpointMismatchError  # noqa: E402
from cmhl_jax.cli import parse_train_args, setup_logging  # noqa: E402
from cmhl_jax.config import ConfigError  # noqa: E402
from cmhl_jax.data import DataError  # noqa: E402
from cmhl_jax.loop import NonFiniteLossError, train_and_evaluate  # noqa: E402

USER_ERRORS = (
    CheckpointMismatchError,
    ConfigError,
    DataError,
    NonFiniteLossError,
    FileNotFoundError,
    PermissionError,
)

__all__ = ["train_and_evaluate"]


def main(argv=None) -> None:
    config, workdir = parse_train_args(argv)
    setup_logging()
    try:
        train_and_evaluate(config, workdir)
    except USER_ERRORS as err:
        # Problems with the inputs, the workdir or the run itself: a message, no traceback.
        sys.exit(f"train.py: error: {type(err).__name__}: {err}")


if __name__ == "__main__":
    main()
