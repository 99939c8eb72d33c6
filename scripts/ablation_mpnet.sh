#!/usr/bin/env bash
# CMHL vs CE at base size: ce_only, cmhl_sum and cmhl_product x 3 seeds on all-mpnet-base-v2
# (configs/emotion_mpnet.py: the paper's recipe, 110M parameters), the 3-epoch schedule of the
# 22.7M ablation (scripts/ablation_full.sh), best checkpoint by val macro-F1, scored on dair-ai
# val and on ISEAR (another domain; evaluation only). bf16 matmul operands with float32
# accumulation (model.matmul_dtype), about 2x faster steps on CPUs with AVX512_BF16 or AMX; on
# MiniLM they left validation macro-F1 unchanged (docs/performance.md).
# Resumable across machines: each run's record is committed under docs/ablation/mpnet/runs/ as
# soon as it is scored, and a rerun skips it; a run stopped mid-way continues from its latest
# checkpoint, saved every 100 updates (2-3 minutes alone on a 2-core AMD EPYC Zen 4) besides
# the epoch ends. When all 9 are scored the tables go to docs/ablation/mpnet/ and into
# docs/emotion.md (block ablation-mpnet).
#   bash scripts/ablation_mpnet.sh [DATA_ROOT] [more ablation flags]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
shift || true
python -m cmhl_jax.ablation --config configs/emotion_mpnet.py --out docs/ablation/mpnet \
  --workdirs runs/ablation_mpnet/runs --seeds 3 --arms ce_only,cmhl_sum,cmhl_product \
  --test "$data/isear/test4.txt" "$@" \
  --config.data.local_dir="$data/emotion" --config.parallel.mode=single --config.num_epochs=3 \
  --config.model.matmul_dtype=bfloat16 --config.checkpoint.every_steps=100
python -m cmhl_jax.ablation --readme docs/emotion.md --readme_block ablation-mpnet --from docs/ablation/mpnet
