"""Evaluate a trained workdir (the `cmhl-eval` command; its code is `cmhl_jax/eval_cli.py`).

    python eval.py --workdir runs/minilm --checkpoint best \
        --data ../shared/data/emotion/val.txt --output runs/minilm/val.json
"""

import sys

from cmhl_jax.eval_cli import FLAGS, main

__all__ = ["FLAGS", "main"]

if __name__ == "__main__":
    sys.exit(main())
