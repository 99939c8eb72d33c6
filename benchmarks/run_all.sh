#!/usr/bin/env bash
# The CPU benchmark runs behind docs/benchmarks.md, then the report (~60 min on 2 quiet cores).
#   bash benchmarks/run_all.sh            (EPOCH_LIMIT=N: first N training texts, default all)
#   bash benchmarks/run_all.sh mpnet      base size (all-mpnet-base-v2, ~45 min; EPOCH_LIMIT
#                                         default 1024 texts: a full epoch is hours per framework;
#                                         MiniLM's throughput is rerun beside it)
# Results go to benchmarks/results/<vendor>-<family>-<model>/, one file per benchmark: a run
# replaces its CPU's file of the same name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=benchmarks/results/$($PY benchmarks/common.py --cpu-slug)
mkdir -p "$R"
report() {
  $PY benchmarks/report.py --results benchmarks/results --out docs/benchmarks.md
  $PY -m cmhl_jax.docs --readme README.md --name benchmarks --from docs/benchmarks.md \
    --section "Targets (CPU, MiniLM, B=32, L=64 unless stated)"
  $PY -m cmhl_jax.docs --readme README.md --name benchmarks-mpnet --from docs/benchmarks.md \
    --section "Targets (CPU, MPNet (base size), B=32, L=64 unless stated)"
}
if [ "${1:-}" = mpnet ]; then
  # MiniLM too, in the same session: hidden size 384 against 768 on one CPU and one load.
  for M in minilm mpnet; do
    for D in float32 bfloat16; do
      SUFFIX=$([ $D = bfloat16 ] && echo _bf16 || true)
      $PY benchmarks/throughput.py --model $M --batch 32 --seq 64 --steps 5 --dtype $D \
        --json $R/throughput_${M}_b32_l64$SUFFIX.json
    done
  done
  for P in fp32 bf16; do
    SUFFIX=$([ $P = bf16 ] && echo _bf16 || true)
    $PY benchmarks/epoch.py --model mpnet --limit "${EPOCH_LIMIT:-1024}" --precision $P \
      --frameworks jax,torch_grouped,hf_trainer --json $R/epoch_mpnet$SUFFIX.json
  done
  report
  exit 0
fi
EPOCH_LIMIT=${EPOCH_LIMIT:-0}
$PY benchmarks/throughput.py --model minilm --batch 32 --seq 64 --steps 20 \
  --json $R/throughput_minilm_b32_l64.json
$PY benchmarks/throughput.py --model minilm --batch 32 --seq 64 --steps 20 --dtype bfloat16 \
  --json $R/throughput_minilm_b32_l64_bf16.json
$PY benchmarks/throughput.py --model roberta-base-random --batch 8 --seq 64 --steps 5 \
  --json $R/throughput_roberta-base-random_b8_l64.json
$PY benchmarks/matmul_probe.py --torch --rounds 10 --json $R/matmul_probe.json
for P in fp32 bf16; do
  SUFFIX=$([ $P = bf16 ] && echo _bf16 || true)
  $PY benchmarks/epoch.py --limit "$EPOCH_LIMIT" --precision $P \
    --frameworks jax,torch_grouped,hf_trainer --json $R/epoch_minilm$SUFFIX.json
done
$PY benchmarks/epoch.py --limit "$EPOCH_LIMIT" --frameworks jax,torch,torch_grouped_compile \
  --torch-compile-shapes dynamic --json $R/epoch_minilm_reference.json
$PY benchmarks/epoch.py --limit "$EPOCH_LIMIT" --no-pack --frameworks jax \
  --json $R/epoch_minilm_buckets.json
report
