#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what benchmarks/gpu_check.sh needs on a lent GPU machine, which reaches no
# registry and does not see ../shared: the Qwen2.5-0.5B architecture directory, the reference dataset, and wheels
# of the two packages its image lacks (tomli-w, gguf; pure Python, for its Python 3.12). Run here, then carry .gpu:
#   bash benchmarks/gpu_prep.sh
#   device run: bash benchmarks/gpu_check.sh      (carry [".gpu"], timeout_s 600)
set -euo pipefail
cd "$(dirname "$0")/.."
G=.gpu
SHARED=${SHARED:-../shared}
mkdir -p "$G/wheels"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d "$G/wheels" "tomli-w>=1.0" "gguf>=0.10"
rm -rf "$G/qwen2.5-0.5b-arch"
cp -r "$SHARED/models/qwen2.5-0.5b-arch" "$G/"
cp "$SHARED/data/lotka_volterra_data.h5" "$G/"
du -sh "$G"
