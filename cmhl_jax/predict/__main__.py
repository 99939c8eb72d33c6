"""`python -m cmhl_jax.predict`: the `cmhl-predict` command (`cmhl_jax.predict_cli`)."""

import sys

from cmhl_jax.predict_cli import main

sys.exit(main())
