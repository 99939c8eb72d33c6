"""Evaluate a trained workdir on a split and write a metrics JSON and a predictions file.

    python eval.py --workdir runs/minilm --checkpoint best \
        --data ../shared/data/emotion/val.txt --output runs/minilm/val.json
"""

import argparse
import json
from pathlib import Path

from cmhl_jax.runtime import ensure_fast_runtime

if __name__ == "__main__":
    ensure_fast_runtime()  # jemalloc + XLA flags; must run before jax is imported

from cmhl_jax.cli import setup_logging  # noqa: E402
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
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint not in ("best", "latest") and not checkpoint.isdigit():
        parser.error(f"--checkpoint must be best, latest or a step number, got {checkpoint!r}")
    setup_logging()
    trained = load_trained(args.workdir, checkpoint)
    report, examples, probs = evaluate_split(trained, args.data, batch_size=args.batch_size)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    predictions = output.with_suffix(".predictions.jsonl")
    write_predictions(predictions, examples, probs, trained.tables)
    report.update(
        workdir=str(args.workdir),
        checkpoint=checkpoint,
        step=trained.step,
        data=args.data,
        predictions_file=str(predictions),
    )
    output.write_text(json.dumps(report, indent=2))
    summary = {k: report[k] for k in ("accuracy", "macro_f1", "weighted_f1")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
