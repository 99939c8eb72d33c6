#!/usr/bin/env bash
# The base-size emotion runs behind docs/results_emotion_mpnet.md (all-mpnet-base-v2, 110M,
# configs/emotion_mpnet.py, dair-ai emotion train, best checkpoint by val macro-F1):
# - the README's base-size command, 5 epochs, with bf16 matmul operands (~1 h on 2 AMD Zen 4
#   cores with AVX512_BF16; float32 steps take about 1.6 times as long);
# - bf16 against float32 operands, the same seed and 1 epoch each (~35 min for the pair), the
#   measurement behind "bf16 does not change validation quality" at this size.
# Sequential; a run resumes if its workdir exists and is skipped once scored (val.json).
#   bash scripts/emotion_mpnet_runs.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/emotion}
runs=${2:-runs}
common=(--config configs/emotion_mpnet.py --config.data.local_dir="$data")
bf16=--config.model.matmul_dtype=bfloat16
short=(--config.num_epochs=1 --config.checkpoint.keep_best=1)

run() {  # name, extra overrides...
  local name=$1; shift
  [ -f "$runs/$name/val.json" ] && return
  python train.py "${common[@]}" --workdir "$runs/$name" "$@"
  python eval.py --workdir "$runs/$name" --checkpoint best --data "$data/val.txt" \
    --output "$runs/$name/val.json"
}

run emotion_mpnet_bf16 "$bf16"                          # the README's base-size run
run emotion_mpnet_1ep_bf16 "$bf16" "${short[@]}"
run emotion_mpnet_1ep_fp32 "${short[@]}"

python scripts/results_table.py --out docs/results_emotion_mpnet.md \
  --command "bash scripts/emotion_mpnet_runs.sh" \
  --run "CMHL (sum), 5 epochs, bf16 operands=$runs/emotion_mpnet_bf16" \
  --run "CMHL (sum), 1 epoch, bf16 operands=$runs/emotion_mpnet_1ep_bf16" \
  --run "CMHL (sum), 1 epoch, float32=$runs/emotion_mpnet_1ep_fp32"
python -m cmhl_jax.docs --readme docs/emotion.md --name results-emotion-mpnet \
  --from docs/results_emotion_mpnet.md
python scripts/precision_compare.py --out docs/results_emotion_mpnet/precision.md \
  "$runs/emotion_mpnet_1ep_bf16" "$runs/emotion_mpnet_1ep_fp32"
python -m cmhl_jax.docs --readme docs/emotion.md --name precision-mpnet \
  --from docs/results_emotion_mpnet/precision.md
