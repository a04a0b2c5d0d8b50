#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, about 5 minutes plus compile time): the
# flagship ViT-B/16 step with CLIP-B/16 + MAE-B/16 teachers, batch 256, bf16,
# against its parts, the naive step and mmpretrain's MILAN
# (tools/speed/pretrain_speed.py), as shipped and then fully compiled (both
# teachers' own compile=True, and mmengine's compile=True for the student and the
# losses); the correctness of the optimised path on the GPU (eager and
# compiled); one profiled step as shipped.
#
# Usage on a CUDA machine with mmengine/mmpretrain/mmcv installed:
#   bash tools/speed/gpu_check.sh [OUT_DIR]
# Where packages are missing and wheels were carried in .whl/ (made by
# tools/speed/fetch_gpu_wheels.sh), they are installed to /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${1:-${OUT:-work_dirs/gpu_check}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import mmpretrain" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
"$PY" -c "import torch, mmengine, mmpretrain; print('torch', torch.__version__, 'mmengine', mmengine.__version__, 'mmpretrain', mmpretrain.__version__)" | tee -a "$OUT_DIR/gpu.txt"
BENCH=("$PY" -u tools/speed/pretrain_speed.py configs/hybrid_vitb.py --preset gpu-vitb)
STATUS=0
# cheapest first, the compile-heavy runs last: a section that fails is reported
# and the next one still runs (the logs so far stay in OUT_DIR)
section() {
    local name=$1 log=$2
    shift 2
    echo "== $name =="
    if ! "$@" 2>&1 | grep -v "mmengine - \|round" | tee "$OUT_DIR/$log"; then
        echo "== FAILED: $name (see $log) =="
        STATUS=1
    fi
}

section "correctness on the GPU: optimised path vs plain reference (fp32)" \
    equivalence_gpu.log "$PY" -u tools/speed/check_equivalence.py --device cuda
section "benchmark: the flagship as shipped" bench_gpu_vitb_asshipped.log \
    "${BENCH[@]}"
section "profile of one step as shipped (keep 0.5)" profile_gpu_vitb.log \
    "${BENCH[@]}" --profile --no-milan --no-naive --keep-ratios 1.0,0.5
section "benchmark: compiled teachers, student and losses" \
    bench_gpu_vitb_fullcompile.log "${BENCH[@]}" --no-naive --no-milan \
    --cfg-options compile=True model.teacher_feat.compile=True \
    model.teacher_rel.compile=True
section "correctness of the compiled path (fp32)" equivalence_gpu_compile.log \
    "$PY" -u tools/speed/check_equivalence.py --device cuda --compile
exit $STATUS
