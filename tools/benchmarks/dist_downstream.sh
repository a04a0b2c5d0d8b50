#!/usr/bin/env bash
# One downstream benchmark from a pretraining checkpoint on one node:
# convert (strict key check, position embedding resized) + tools/dist_train.sh.
#
# Usage: tools/benchmarks/dist_downstream.sh TASK PRETRAIN GPUS [train.py args...]
#   TASK: in1k-ft | in1k-ft-l | in1k-linear | ade20k | coco | coco-25e
#         | coco-vitdet | cifar100 | cars | inat19 (demo-*: CPU miniatures;
#         python tools/benchmarks/downstream.py --help lists them all)
# e.g.  tools/benchmarks/dist_downstream.sh in1k-ft work_dirs/hybrid_vitb/epoch_300.pth 8
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT as for tools/dist_train.sh
# (run the same command on every node). WORK_DIR overrides
# work_dirs/benchmarks/<task>/<checkpoint name>.
set -e
TASK=$1
PRETRAIN=$2
GPUS=$3
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
export PYTHON
WORK_DIR_ARGS=()
if [ -n "${WORK_DIR:-}" ]; then WORK_DIR_ARGS=(--work-dir "$WORK_DIR"); fi

PYTHONPATH="$DIR/../..":$PYTHONPATH \
exec "$PYTHON" "$DIR/downstream.py" "$TASK" "$PRETRAIN" --launcher pytorch \
    --gpus "$GPUS" "${WORK_DIR_ARGS[@]}" -- "${@:4}"
