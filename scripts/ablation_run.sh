#!/usr/bin/env bash
# The ablation behind the README's Research-workflow table: all five arms x 5 seeds on the
# embedded MiniLM, scored on val. Each run is capped at 100 updates (about 4,500 texts, 28% of
# an epoch) so that 25 runs fit in about 30 minutes on 2 CPU cores; drop --config.max_steps for
# full 5-epoch runs (about 10 minutes each on an unshared 2-core machine).
#   bash scripts/ablation_run.sh [DATA_DIR] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/emotion}
out=${2:-runs/ablation}
python -m cmhl_jax.ablation --config configs/emotion_minilm.py --out "$out" --seeds 5 \
  --config.data.local_dir="$data" --config.max_steps=100 --config.parallel.mode=single
mkdir -p docs/ablation
cp "$out"/ablation.md "$out"/ablation.csv "$out"/ablation_runs.csv "$out"/*.png docs/ablation/
python -m cmhl_jax.ablation --readme docs/research.md --from "$out"
