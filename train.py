"""Train a CMHL model (the `cmhl-train` command; its code is `cmhl_jax/train_cli.py`).

    python train.py --config configs/emotion_minilm.py --workdir runs/minilm \
        --config.data.local_dir=../shared/data/emotion
"""

import sys

from cmhl_jax.loop import train_and_evaluate
from cmhl_jax.train_cli import FLAGS, main

__all__ = ["FLAGS", "main", "train_and_evaluate"]

if __name__ == "__main__":
    sys.exit(main())
