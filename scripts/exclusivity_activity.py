"""How much the exclusivity hinge had to act on, per run of an ablation (emotion and GoEmotions).

    python scripts/exclusivity_activity.py docs/goemotions [--workdirs runs/goemotions_ablation]
    python scripts/exclusivity_activity.py docs/ablation/full --forms [--split test]

For each scored run (`OUT/runs/<arm>_s<seed>.npz`, the best checkpoint's val probabilities)
and the run's own loss settings (the flattened config in `OUT/runs/<arm>_s<seed>.json`:
loss.variant, goemotions.*): the share of val texts with at least one (positive, negative) label
pair past its threshold tau_ij (the hinge is on), and the mean hinge (the exclusivity term's
value on val, as in training). With --workdirs, also the mean of the logged exclusivity, emotion BCE
and valence BCE terms per epoch (`metrics.jsonl`). With --forms, per arm instead (mean over its
seeds): the share of texts of --split on which each form's hinge (sum, product, min) fires at the
run's thresholds, the arm's own form marked, and the mean top probability (how confident the
arm is: spread-out probabilities pass the product form's p_i·p_j more often). Prints a markdown
table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_collections
import numpy as np

from cmhl_jax.export import unflatten
from cmhl_jax.losses import exclusivity_per_text
from cmhl_jax.tasks.emotion.affect import build_affect_tables
from cmhl_jax.tasks.goemotions import loss_arrays

FORMS = ("sum", "product", "min")


def config_block(config: dict, block: str) -> ml_collections.ConfigDict:
    """The nested config block `block` of a flattened ("a.b.c": value) config."""
    return ml_collections.ConfigDict(unflatten(config).get(block, {}))


def pair_tables(config: dict) -> tuple[np.ndarray, np.ndarray]:
    """(pair_mask, tau) [C, C] of a run's flattened config, as its loss builds them."""
    if config.get("task", "emotion") == "emotion":
        tables = build_affect_tables(config_block(config, "affect"))
        return tables.pair_mask, tables.tau
    arrays = loss_arrays(config_block(config, "goemotions"))
    return np.asarray(arrays["pair_mask"]), np.asarray(arrays["tau"])


def hinge_activity(probs: np.ndarray, config: dict, variant: str | None = None):
    """(share of texts with the hinge on, mean exclusivity term) at the run's thresholds, for
    the run's own form or `variant`."""
    pair_mask, tau = pair_tables(config)
    variant = variant or config.get("loss.variant", "sum")
    per_text = np.asarray(exclusivity_per_text(probs, pair_mask, tau, variant))
    return float(np.mean(per_text > 0)), float(per_text.mean())


def form_table(out: Path, split: str) -> list[str]:
    """Per arm, mean over seeds: % of `split` texts on which each form's hinge fires."""
    shares: dict[str, list] = {}
    own_form: dict[str, str] = {}
    for record_path in sorted((out / "runs").glob("*.json")):
        record = json.loads(record_path.read_text())
        with np.load(record_path.with_suffix(".npz")) as arrays:
            probs = arrays[f"{split}_probs"]
        config = record["config"]
        shares.setdefault(record["arm"], []).append(
            [*(hinge_activity(probs, config, form)[0] for form in FORMS), probs.max(-1).mean()]
        )
        if config.get("loss.lam", 0) > 0:
            own_form[record["arm"]] = config.get("loss.variant", "sum")
    lines = [
        f"| arm | seeds | {' | '.join(f'{form} hinge on (%)' for form in FORMS)} "
        "| mean top probability (%) |",
        "|---|---:|" + "---:|" * (len(FORMS) + 1),
    ]
    for arm, rows in shares.items():
        *form_shares, top = np.mean(rows, axis=0)
        cells = [
            f"**{100 * share:.2f}**" if own_form.get(arm) == form else f"{100 * share:.2f}"
            for form, share in zip(FORMS, form_shares, strict=True)
        ]
        lines.append(f"| `{arm}` | {len(rows)} | {' | '.join(cells)} | {100 * top:.2f} |")
    return lines


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
    p.add_argument("--forms", action="store_true", help="per arm, every form's firing share")
    p.add_argument("--split", default="val", help="with --forms: val or test (default val)")
    args = p.parse_args(argv)
    if args.forms:
        print("\n".join(form_table(args.out, args.split)))
        return
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
