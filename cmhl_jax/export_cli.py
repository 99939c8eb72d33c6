"""Export a trained workdir to a portable folder, and import it back.

    python -m cmhl_jax.export --workdir runs/minilm --out exports/minilm [--checkpoint best]

The export folder holds:

* the encoder in Hugging Face format (`config.json`, `model.safetensors`; loadable with
  `transformers.AutoModel.from_pretrained(EXPORT_DIR)`) and its tokenizer files;
* `heads.safetensors`: every head parameter, flat keys `<head>.<param>` (e.g. `emotion.kernel`,
  [hidden, classes], applied as `h @ kernel + bias` to the first-token state h);
* `heads.json`: format version, task, head sizes and label names, the affect config, the
  full training config, the checkpoint step and where it came from.

`load_export(EXPORT_DIR)` rebuilds a `TrainedModel`; `Predictor.from_export(EXPORT_DIR)`
predicts with it.
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
