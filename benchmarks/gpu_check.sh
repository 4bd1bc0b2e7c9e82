#!/usr/bin/env bash
# The GPU checks of issue 14 in one run of at most ~9 minutes (a lent machine gives a task 15 minutes in all):
#   1. benchmarks/study_speed.py: train ms/step, % of peak and compile seconds at S=128/512/768, eval windows/s
#      on the seed protocol's 700 windows (compiled and eager decoding, compile seconds per context), baselines
#      on 16 cores, the whole reference plan extrapolated (compiling included);
#   2. tests/test_gpu.py: compiled vs eager (training, decoding), batch size from free memory, B=64 S=512 in 24 GiB;
#   3. study_speed.py --compile graphs --train-only: the training step under CUDA graphs, against part 1's;
#   4. benchmarks/plan_wall.py: the reference plan at 5% of its training, every stage and evaluation run for real.
# Prepare with benchmarks/gpu_prep.sh here; each part's log is written to $OUT (or .gpu/out). A dry run of the
# plumbing on a CPU: MODEL=tiny-qwen2 STEPS=1 SERIES=2 SCALE=1e-6 BUDGET=1e12 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu
OUT=${OUT:-$G/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$G"/wheels/*.whl
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FLOPCAST_QWEN_ARCH="$PWD/$G/qwen2.5-0.5b-arch"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU") | tee "$OUT/device.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/device.txt"
MODEL=${MODEL:-random:$G/qwen2.5-0.5b-arch} STEPS=${STEPS:-20} SERIES=${SERIES:-100} SCALE=${SCALE:-0.05}
DATA="$G/lotka_volterra_data.h5"
timeout 250 python3 benchmarks/study_speed.py --model "$MODEL" --data "$DATA" --steps "$STEPS" \
    --eval-series "$SERIES" --baseline-series "$SERIES" 2>&1 | grep -v "it/s]" | tee "$OUT/study_speed.txt"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs -s 2>&1 | tail -20 | tee "$OUT/test_gpu.txt"
timeout 70 python3 benchmarks/study_speed.py --model "$MODEL" --data "$DATA" --steps "$STEPS" --contexts 512 \
    --compile graphs --train-only 2>&1 | grep -v "it/s]" | tee "$OUT/study_speed_graphs.txt"
PYTHONWARNINGS=ignore timeout 140 python3 benchmarks/plan_wall.py --model "$MODEL" --data "$DATA" --scale "$SCALE" \
    ${BUDGET:+--budget "$BUDGET"} ${SERIES:+--eval-series "$SERIES"} 2>&1 | grep -v "it/s]" | tee "$OUT/plan_wall.txt"
