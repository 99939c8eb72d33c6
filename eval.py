"""Evaluate a trained workdir on a split and write a metrics JSON and a predictions file.

    python eval.py --workdir runs/minilm --checkpoint best \
        --data ../shared/data/emotion/val.txt --output runs/minilm/val.json
"""

import argparse
import json
import sys
from pathlib import Path

from cmhl_jax.runtime import ensure_fast_runtime

if __name__ == "__main__":
    ensure_fast_runtime()  # jemalloc + XLA flags; must run before jax is imported

from cmhl_jax.checkpoint import CheckpointMismatchError  # noqa: E402
from cmhl_jax.cli import setup_logging  # noqa: E402
from cmhl_jax.data import DataError  # noqa: E402
from cmhl_jax.evaluate import evaluate_split, load_trained, write_predictions  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    parser.add_argument(
        "--data", required=True, help="a .txt/.csv file, hf:NAME[:CONFIG]:SPLIT, or a split name"
    )
    parser.add_argument("--output", required=True, help="metrics JSON path")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write PNGs next to --output: confusion, reliability, co-activation, curves",
    )
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint not in ("best", "latest") and not checkpoint.isdigit():
        parser.error(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    setup_logging()
    try:
        trained = load_trained(args.workdir, checkpoint)
        report, examples, probs = evaluate_split(trained, args.data, batch_size=args.batch_size)
    except (FileNotFoundError, CheckpointMismatchError, DataError) as err:
        sys.exit(f"eval.py: error: {type(err).__name__}: {err}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    predictions = output.with_suffix(".predictions.jsonl")
    write_predictions(predictions, trained, examples, probs)
    report.update(
        workdir=str(args.workdir),
        checkpoint=checkpoint,
        step=trained.step,
        data=args.data,
        predictions_file=str(predictions),
    )
    if args.plots:
        from cmhl_jax.plots import write_eval_plots

        plots = write_eval_plots(
            output.with_suffix(""),
            probs,
            examples.labels,
            trained.task.label_names,
            primary=trained.task.primary,
            tables=trained.tables,
            metrics_path=Path(args.workdir) / "metrics.jsonl",
            bins=trained.config.eval.ece_bins,
            variant=trained.config.loss.variant,
        )
        report["plots"] = [str(p) for p in plots]
    output.write_text(json.dumps(report, indent=2))
    summary = {k: report[k] for k in ("accuracy", "macro_f1", "weighted_f1", "macro_recall")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
