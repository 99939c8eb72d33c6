"""`python -m cmhl_jax.export`: the `cmhl-export` command (`cmhl_jax.export_cli`)."""

import sys

from cmhl_jax.export_cli import main

sys.exit(main())
