#!/usr/bin/env bash
# The real mental-health runs behind docs/results_mental_health.md: MiniLM on the SWMH-shaped
# substitute (../shared/data/reddit_mh), the gated model against the CE-only single-head
# baseline, same seed, selected on val by 0.7 F1 + 0.3 confidence.
#   bash scripts/mental_health_runs.sh [DATA_DIR] [RUNS_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/reddit_mh}
runs=${2:-runs}
epochs=${3:-10}
common=(--config configs/swmh_minilm.py --config.data.local_dir="$data"
        --config.parallel.mode=single --config.num_epochs="$epochs")

run() {  # name, extra overrides...
  local name=$1; shift
  python train.py "${common[@]}" --workdir "$runs/$name" "$@"
  python eval.py --workdir "$runs/$name" --checkpoint best --data "$data/val.csv" \
    --output "$runs/$name/val.json"
}

run swmh_minilm_gated_s0
run swmh_minilm_ce_single_head_s0 --config.mental_health.single_head_baseline=true

python scripts/results_table.py --out docs/results_mental_health.md \
  --command "bash scripts/mental_health_runs.sh $data $runs $epochs" \
  --run "gated multi-head (paper)=$runs/swmh_minilm_gated_s0" \
  --run "CE-only single head=$runs/swmh_minilm_ce_single_head_s0"
python -m cmhl_jax.docs --readme docs/mental_health.md --name results-mental-health \
  --from docs/results_mental_health.md
