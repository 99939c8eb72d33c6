"""Evaluate a trained workdir on a split and write a metrics JSON and a predictions file.

    cmhl-eval --workdir runs/minilm --checkpoint best \
        --data ../shared/data/emotion/val.txt --output runs/minilm/val.json

(`python eval.py ...` from a checkout is the same command.) `--data` is a file, a split name of
the run's data source (`validation`), `hf:NAME[:CONFIG]:SPLIT` or `tfds:NAME[:SPLIT]`.
"""

import json
import sys
from pathlib import Path

from absl import flags
from etils import epath

from cmhl_jax import cli
from cmhl_jax.evaluate import evaluate_split, load_trained, write_predictions
from cmhl_jax.plots import write_eval_plots
from cmhl_jax.runtime import ensure_fast_runtime

FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string("workdir", None, "a training workdir", flag_values=FLAGS)
_CHECKPOINT = cli.define_checkpoint_flag(FLAGS)
_DATA = flags.DEFINE_string(
    "data", None, "a .txt/.csv file, hf:NAME[:CONFIG]:SPLIT, or a split name", flag_values=FLAGS
)
_OUTPUT = flags.DEFINE_string("output", None, "metrics JSON path", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "eval batch size", lower_bound=1, flag_values=FLAGS
)
_PLOTS = flags.DEFINE_bool(
    "plots",
    False,
    "also write PNGs next to --output: confusion, reliability, curves",
    flag_values=FLAGS,
)
flags.mark_flags_as_required(["workdir", "data", "output"], flag_values=FLAGS)


def main(argv: list[str] | None = None) -> int:
    """`eval.py` and the `cmhl-eval` command."""
    prog = cli.prog_name("eval.py")
    if rest := cli.parse(FLAGS, argv, prog, __doc__):
        cli.usage_error(prog, f"unexpected arguments: {' '.join(rest)}")
    ensure_fast_runtime()  # a fast allocator (mimalloc or jemalloc), XLA flags: before computing
    cli.setup_logging()
    with cli.user_errors(prog):
        trained = load_trained(_WORKDIR.value, _CHECKPOINT.value)
        report, examples, probs = evaluate_split(trained, _DATA.value, batch_size=_BATCH_SIZE.value)
    output = Path(_OUTPUT.value)
    output.parent.mkdir(parents=True, exist_ok=True)
    predictions = output.with_suffix(".predictions.jsonl")
    report.update(
        workdir=str(_WORKDIR.value),
        checkpoint=_CHECKPOINT.value,
        step=trained.step,
        data=_DATA.value,
        predictions_file=str(predictions),
    )
    # The metrics first: they are kept if writing the predictions or the plots fails.
    output.write_text(json.dumps(report, indent=2))
    write_predictions(predictions, trained, examples, probs)
    if _PLOTS.value:
        plots = write_eval_plots(
            output.with_suffix(""),
            probs,
            examples.labels,
            trained.task.label_names,
            primary=trained.task.primary,
            tables=trained.task.tables,
            metrics_path=epath.Path(_WORKDIR.value) / "metrics.jsonl",
            bins=trained.config.eval.ece_bins,
            variant=trained.config.get("loss", {}).get("variant", "sum"),
        )
        report["plots"] = [str(p) for p in plots]
        output.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in trained.task.summary_metrics[:3] if k in report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
