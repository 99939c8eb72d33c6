#!/usr/bin/env bash
# The real emotion runs behind docs/results_emotion.md (MiniLM, dair-ai emotion train, selected
# on val). Sequential; each run resumes if its workdir exists. About 10-40 min per run on 2 cores.
#   bash scripts/emotion_runs.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/emotion}
runs=${2:-runs}
common=(--config configs/emotion_minilm.py --config.data.local_dir="$data" --config.parallel.mode=single)

run() {  # name, extra overrides...
  local name=$1; shift
  python train.py "${common[@]}" --workdir "$runs/$name" "$@"
  python eval.py --workdir "$runs/$name" --checkpoint best --data "$data/val.txt" \
    --output "$runs/$name/val.json"
}

run emotion_minilm_cmhl_s0                                  # CMHL, packed rows (default)
run emotion_minilm_ce_s0 --config.loss.alpha=0 --config.loss.beta=0 --config.loss.lam=0
run emotion_minilm_cmhl_unpacked_s0 --config.data.pack=false --config.batch_size=44

python scripts/results_table.py --out docs/results_emotion.md \
  --command "bash scripts/emotion_runs.sh" \
  --run "CMHL (sum), packed=$runs/emotion_minilm_cmhl_s0" \
  --run "CE only, packed=$runs/emotion_minilm_ce_s0" \
  --run "CMHL (sum), unpacked buckets=$runs/emotion_minilm_cmhl_unpacked_s0"
python -m cmhl_jax.docs --readme docs/emotion.md --name results-emotion --from docs/results_emotion.md
