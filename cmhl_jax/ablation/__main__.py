"""`python -m cmhl_jax.ablation`: the `cmhl-ablation` command."""

import sys

from cmhl_jax.ablation.cli import main

sys.exit(main())
