"""Train a CMHL model.

    python train.py --config configs/emotion_minilm.py --workdir runs/minilm \
        --config.data.local_dir=../shared/data/emotion
"""

from cmhl_jax.runtime import ensure_fast_runtime

if __name__ == "__main__":
    ensure_fast_runtime()  # jemalloc + XLA flags; must run before jax is imported

from cmhl_jax.cli import parse_train_args, setup_logging  # noqa: E402
from cmhl_jax.loop import train_and_evaluate  # noqa: E402

__all__ = ["train_and_evaluate"]


def main(argv=None) -> None:
    config, workdir = parse_train_args(argv)
    setup_logging()
    train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main()
