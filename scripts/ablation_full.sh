#!/usr/bin/env bash
# The full-length ablation behind docs/emotion.md's "Does CMHL help?" table: ce_only,
# aux_heads, cmhl_sum and cmhl_product x 5 seeds on the embedded MiniLM, each the full 3-epoch schedule
# (about 1,080 updates of ~45 texts), best checkpoint by val macro-F1, scored on dair-ai val
# and on ISEAR (../shared/data/isear/test4.txt, another domain; evaluation only).
#
# Resumable across machines: each finished run's scores are committed under
# docs/ablation/full/runs/<arm>_s<seed>.json (+ .npz, the per-text probabilities) and a rerun
# skips them; the training workdirs (checkpoints) stay under runs/ablation_full/runs.
#   bash scripts/ablation_full.sh [DATA_ROOT] [--report_only]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
shift || true
python -m cmhl_jax.ablation --config configs/emotion_minilm.py --out docs/ablation/full \
  --workdirs runs/ablation_full/runs --seeds 5 --arms ce_only,aux_heads,cmhl_sum,cmhl_product \
  --test "$data/isear/test4.txt" "$@" \
  --config.data.local_dir="$data/emotion" --config.parallel.mode=single --config.num_epochs=3
python -m cmhl_jax.ablation --readme docs/emotion.md --readme_block ablation-full --from docs/ablation/full
