"""Train a CMHL model.

    python train.py --config configs/emotion_minilm.py --workdir runs/minilm \
        --config.data.local_dir=../shared/data/emotion
"""

from cmhl_jax.cli import parse_train_args, setup_logging
from cmhl_jax.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]


def main(argv=None) -> None:
    config, workdir = parse_train_args(argv)
    setup_logging()
    train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main()
