#!/usr/bin/env bash
# The CPU benchmark runs behind docs/benchmarks.md, then the report (~40 min on 2 quiet cores).
#   bash benchmarks/run_all.sh            (EPOCH_LIMIT=N: first N training texts, default all)
# Results go to benchmarks/results/<vendor>-<family>-<model>/ (one directory per CPU; the
# first machine's files stay in benchmarks/results/), so every CPU's results are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=benchmarks/results/$($PY benchmarks/common.py --cpu-slug)
mkdir -p "$R"
EPOCH_LIMIT=${EPOCH_LIMIT:-0}
$PY benchmarks/throughput.py --model minilm --batch 32 --seq 64 --steps 20 \
  --json $R/throughput_minilm_b32_l64.json
$PY benchmarks/throughput.py --model roberta-base-random --batch 8 --seq 64 --steps 5 \
  --json $R/throughput_roberta-base-random_b8_l64.json
$PY benchmarks/profile_step.py --model minilm --batch 32 --seq 64 \
  --json $R/profile_minilm_b32_l64.json
$PY benchmarks/loss_bench.py --batch 256 --step-json $R/throughput_minilm_b32_l64.json \
  --json $R/loss.json
$PY benchmarks/epoch.py --limit "$EPOCH_LIMIT" \
  --frameworks jax,torch,torch_grouped,torch_grouped_compile,hf_trainer --json $R/epoch_minilm.json
$PY benchmarks/epoch.py --limit "$EPOCH_LIMIT" --no-pack --frameworks jax \
  --json $R/epoch_minilm_buckets.json
$PY benchmarks/report.py --results benchmarks/results --out docs/benchmarks.md
$PY -m cmhl_jax.docs --readme README.md --name benchmarks --from docs/benchmarks.md \
  --section "Targets (CPU, MiniLM, B=32, L=64 unless stated)"
