#!/usr/bin/env bash
# The GPU check, one prepared command: 5 minutes or less on one H100 (benchmarks/gpu_check.py
# says what it measures). Writes benchmarks/studies/<today>-gpu-check/gpu_check.{md,json}
# (--out to choose), a new study folder: give it a README before committing it.
#
#   bash benchmarks/gpu_check.sh                      # demo, demo16 (16 x 16 tokens) and paper, fp32 and bf16
#   bash benchmarks/gpu_check.sh --presets demo       # any gpu_check.py option passes through
#
# Needs a Python with a CUDA build of torch, timm, numpy and scikit-learn: $PYTHON, else the
# kit's .venv, else python3. The kit itself is taken from this checkout (PYTHONPATH), so no
# install is needed. GPU_CHECK_TIMEOUT (seconds, default 300) bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader
exec timeout "${GPU_CHECK_TIMEOUT:-300}" "$PYTHON" benchmarks/gpu_check.py --device cuda "$@"
