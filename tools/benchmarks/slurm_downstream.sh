#!/usr/bin/env bash
# One downstream benchmark from a pretraining checkpoint under Slurm: convert on
# this (submitting) node, then tools/slurm_train.sh. The work dir must be on
# storage the compute nodes share.
#
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] [WORK_DIR=...] \
#        tools/benchmarks/slurm_downstream.sh PARTITION TASK PRETRAIN [train.py args...]
#   TASK: in1k-ft | in1k-ft-l | in1k-linear | ade20k | coco | coco-25e
# e.g.  GPUS=8 tools/benchmarks/slurm_downstream.sh gpu ade20k work_dirs/hybrid_vitb/epoch_300.pth
set -e
PARTITION=$1
TASK=$2
PRETRAIN=$3
GPUS=${GPUS:-8}
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
export PYTHON
WORK_DIR_ARGS=()
if [ -n "${WORK_DIR:-}" ]; then WORK_DIR_ARGS=(--work-dir "$WORK_DIR"); fi

PYTHONPATH="$DIR/../..":$PYTHONPATH \
exec "$PYTHON" "$DIR/downstream.py" "$TASK" "$PRETRAIN" --launcher slurm \
    --gpus "$GPUS" --partition "$PARTITION" "${WORK_DIR_ARGS[@]}" -- "${@:4}"
