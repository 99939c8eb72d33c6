"""The `cmhl-export` command: export a trained workdir to a portable folder (what the folder
holds, and how to load it back: `cmhl_jax.export`).

    python -m cmhl_jax.export --workdir runs/minilm --out exports/minilm [--checkpoint best]
"""

from __future__ import annotations

import json

from absl import flags

from cmhl_jax import cli
from cmhl_jax.evaluate import load_trained
from cmhl_jax.export import export
from cmhl_jax.runtime import ensure_fast_runtime

FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string("workdir", None, "a training workdir", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "export folder", flag_values=FLAGS)
_CHECKPOINT = cli.define_checkpoint_flag(FLAGS)
flags.mark_flags_as_required(["workdir", "out"], flag_values=FLAGS)


def main(argv: list[str] | None = None) -> int:
    """The `cmhl-export` command."""
    if rest := cli.parse(FLAGS, argv, "cmhl-export", __doc__):
        cli.usage_error("cmhl-export", f"unexpected arguments: {' '.join(rest)}")
    ensure_fast_runtime()
    cli.setup_logging()
    with cli.user_errors("cmhl-export"):
        out = export(load_trained(_WORKDIR.value, _CHECKPOINT.value), _OUT.value)
    print(json.dumps({"export_dir": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0
