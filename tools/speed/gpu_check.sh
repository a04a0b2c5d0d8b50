#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, about 8 minutes, offline): the code
# paths CPU CI never runs, through the user's entry points (torchrun +
# tools/train.py + the shipped configs) on synthetic images and random-weight
# teachers. The sections and their figures: tools/speed/gpu_check.py.
#
# Usage on a CUDA machine with mmengine/mmpretrain/mmcv installed:
#   bash tools/speed/gpu_check.sh [gpu_check.py options, e.g. --only a,c]
# Writes summary.md, results.json and one log per section to $OUT (or --out).
# Anywhere: bash tools/speed/gpu_check.sh --dry-run (every command printed,
# each training command checked as tools/train.py would, (e) run on the CPU).
# Where packages are missing and wheels were carried in .whl/ (made by
# tools/speed/fetch_gpu_wheels.sh), they are installed to /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import mmpretrain" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONWARNINGS=ignore
exec "$PY" -u tools/speed/gpu_check.py "$@"
