#!/usr/bin/env bash
# Every command on every task, on real data: a short training, then eval.py --plots, the predict
# CLI on raw texts and on a file, cmhl-export and predict from the export, and cmhl-ablation with
# one arm and one seed. Stops at the first command that fails.
#   bash scripts/command_matrix.sh [DATA_ROOT] [OUT] [TASKS...]
# TASKS: emotion, mental_health, goemotions (default: all three). Steps per task: emotion 60,
# mental health 30, GoEmotions 300 (a multi-label model that predicts 0, 1 or several labels).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
out=${2:-runs/command_matrix}
shift $(($# < 2 ? $# : 2))
tasks=("${@:-emotion mental_health goemotions}")
read -r -a tasks <<<"${tasks[*]}"

run_task() {
  local task=$1 config=$2 dir=$3 steps=$4 val=$5
  local work="$out/$task"
  local texts=("i feel wonderful today" "this makes me so angry" "thank you, and i am sorry" "ok")
  echo "== $task: train $steps steps"
  python train.py --config "$config" --workdir "$work/run" --config.data.local_dir="$dir" \
    --config.max_steps="$steps" --config.model.matmul_dtype=bfloat16
  echo "== $task: eval.py --plots (the first 300 lines of the validation file)"
  mkdir -p "$work/eval"
  head -n 301 "$dir/$val" >"$work/eval/$val"
  python eval.py --workdir "$work/run" --data "$work/eval/$val" --output "$work/eval/val.json" --plots
  echo "== $task: predict (texts, file)"
  python -m cmhl_jax.predict --workdir "$work/run" "${texts[@]}"
  printf '%s\n' "${texts[@]}" >"$work/texts.txt"
  python -m cmhl_jax.predict --workdir "$work/run" --input "$work/texts.txt" --output "$work/predictions.jsonl"
  echo "== $task: export, predict from the export"
  python -m cmhl_jax.export --workdir "$work/run" --out "$work/export"
  python -m cmhl_jax.predict --export "$work/export" "${texts[@]}"
  echo "== $task: ablation, one arm, one seed"
  python -m cmhl_jax.ablation --config "$config" --out "$work/ablation" --seeds 1 --arms ce_only \
    --resamples 200 --config.data.local_dir="$dir" --config.max_steps=6 \
    --config.model.matmul_dtype=bfloat16
}

for task in "${tasks[@]}"; do
  case $task in
    emotion) run_task emotion configs/emotion_minilm.py "$data/emotion" 60 val.txt ;;
    mental_health) run_task mental_health configs/swmh_minilm.py "$data/reddit_mh" 30 val.csv ;;
    goemotions) run_task goemotions configs/goemotions_minilm.py "$data/goemotions" 300 dev.tsv ;;
    *) echo "unknown task $task (emotion, mental_health, goemotions)" >&2 && exit 2 ;;
  esac
done
echo "all commands exited 0: $out"
