#!/usr/bin/env bash
# GoEmotions (multi-label) ablation: BCE only vs multi-label CMHL, 3 seeds each, MiniLM, trained
# on the official train.tsv and selected / scored on dev.tsv (the test split is kept back).
# Not run yet (no CPU to spare when it was written). Resumes: scored runs are skipped and an
# interrupted training continues from its latest checkpoint. Writes docs/goemotions/ablation.md.
#   bash scripts/goemotions_runs.sh [DATA_DIR] [WORKDIRS] [more ablation flags]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/goemotions}
workdirs=${2:-runs/goemotions_ablation}
shift $(($# < 2 ? $# : 2))  # the rest: more ablation flags

# ce_only (the reference, built in): loss.alpha=0, loss.beta=0, loss.lam=0 = BCE on the emotion
# head only. cmhl_sum: BCE + 0.5 * valence BCE + 0.4 * exclusivity (sum form, adaptive tau).
# Extra arms (not in the default 3x2 budget), e.g.:
#   --arm aux_valence=loss.lam=0 --arm cmhl_min=loss.variant=min
python -m cmhl_jax.ablation --config configs/goemotions_minilm.py --out docs/goemotions \
  --workdirs "$workdirs" --seeds 3 --arms ce_only,cmhl_sum \
  --config.data.local_dir="$data" --config.parallel.mode=single "$@"
