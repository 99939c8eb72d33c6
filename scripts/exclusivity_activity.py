"""How much the exclusivity hinge had to act on, per run of an ablation (multi-label tasks).

    python scripts/exclusivity_activity.py docs/goemotions [--workdirs runs/goemotions_ablation]

For each scored run (`OUT/runs/<arm>_s<seed>.npz`, the best checkpoint's val probabilities)
and the run's own loss settings (the flattened config in `OUT/runs/<arm>_s<seed>.json`:
loss.variant, goemotions.*): the share of val texts with at least one (positive, negative) label
pair past its threshold tau_ij (the hinge is on), and the mean hinge (the exclusivity term's
value on val, as in training). With --workdirs, also the mean of the logged exclusivity, emotion BCE
and valence BCE terms per epoch (`metrics.jsonl`). Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_collections
import numpy as np

from cmhl_jax.losses import exclusivity_per_text
from cmhl_jax.tasks.goemotions import loss_arrays


def hinge_activity(probs: np.ndarray, config: dict) -> tuple[float, float]:
    """(share of texts with the hinge on, mean exclusivity term) at the run's settings."""
    goemotions = {
        key.removeprefix("goemotions."): value
        for key, value in config.items()
        if key.startswith("goemotions.")
    }
    arrays = loss_arrays(ml_collections.ConfigDict(goemotions))
    variant = config.get("loss.variant", "sum")
    per_text = np.asarray(exclusivity_per_text(probs, arrays["pair_mask"], arrays["tau"], variant))
    return float(np.mean(per_text > 0)), float(per_text.mean())


def train_terms(workdir: Path) -> dict[int, dict[str, float]]:
    """Mean of each logged loss term per epoch."""
    by_epoch: dict[int, dict[str, list]] = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            terms = by_epoch.setdefault(record["epoch"], {})
            for key in ("loss", "bce_emotion", "bce_valence", "exclusivity"):
                if key in record:
                    terms.setdefault(key, []).append(record[key])
    return {e: {k: float(np.mean(v)) for k, v in t.items()} for e, t in sorted(by_epoch.items())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="the ablation's output dir")
    p.add_argument("--workdirs", type=Path, help="the ablation's training workdirs")
    args = p.parse_args(argv)
    rows = []
    for record_path in sorted((args.out / "runs").glob("*.json")):
        record = json.loads(record_path.read_text())
        with np.load(record_path.with_suffix(".npz")) as arrays:
            probs = arrays["val_probs"]
        on, term = hinge_activity(probs, record["config"])
        row = [f"`{record['arm']}`", str(record["seed"]), f"{100 * on:.2f}", f"{term:.2e}"]
        if args.workdirs:
            terms = train_terms(args.workdirs / record_path.stem)
            row.append(", ".join(f"{t.get('exclusivity', 0.0):.1e}" for t in terms.values()))
            for key in ("bce_emotion", "bce_valence"):
                row.append(", ".join(f"{t.get(key, 0.0):.4f}" for t in terms.values()))
        rows.append(row)
    header = ["arm", "seed", "val texts with the hinge on (%)", "val exclusivity term"]
    if args.workdirs:
        header += [
            "training exclusivity term, mean per epoch",
            "training emotion BCE, mean per epoch",
            "training valence BCE, mean per epoch",
        ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
