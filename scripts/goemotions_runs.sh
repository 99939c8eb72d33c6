#!/usr/bin/env bash
# GoEmotions (multi-label) ablation: BCE only vs multi-label CMHL, 3 seeds each, MiniLM, trained
# on the official train.tsv and selected / scored on dev.tsv (the test split is kept back).
# Resumes: scored runs (docs/goemotions/runs/*.json, committed) are skipped and an interrupted
# training continues from its latest checkpoint. Writes docs/goemotions/ablation.md.
# Budget choices, for a 2-core CPU: 3 epochs (the config has the GoEmotions paper's 4; the
# table's per-epoch val curve shows whether 3 is enough) and bf16 matmul operands with float32
# accumulation (model.matmul_dtype; 1.7-2x faster train steps on CPUs with AVX512_BF16 / AMX,
# everything else float32; on a CPU without bf16 instructions drop that line).
#   bash scripts/goemotions_runs.sh [DATA_DIR] [WORKDIRS] [more ablation flags]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/goemotions}
workdirs=${2:-runs/goemotions_ablation}
shift $(($# < 2 ? $# : 2))  # the rest: more ablation flags

# The task's built-in arms: ce_only (the reference: loss.alpha=0, loss.lam=0 = BCE on the
# emotion head only), valence_aux (+ the valence head at the config's alpha, 0.1, no exclusivity) and
# cmhl (the shipped configs/goemotions_minilm.py setting: valence head + min-form hinge).
python -m cmhl_jax.ablation --config configs/goemotions_minilm.py --out docs/goemotions \
  --workdirs "$workdirs" --seeds 3 --arms ce_only,valence_aux,cmhl \
  --config.data.local_dir="$data" --config.parallel.mode=single \
  --config.num_epochs=3 --config.model.matmul_dtype=bfloat16 "$@"
