#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args...]
#
# GPUS is the number of tasks (one per GPU). GPUS_PER_NODE=0 runs CPU-only tasks:
# no --gres request (a cluster without GPUs rejects one), TASKS_PER_NODE tasks
# per node (default: all GPUS tasks on one node); use a config whose
# env_cfg.dist_cfg.backend is 'gloo' (configs/demo/*), e.g.
#   GPUS=2 GPUS_PER_NODE=0 CPUS_PER_TASK=1 tools/slurm_train.sh debug demo \
#       configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${@:4}
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}

if [ "${GPUS_PER_NODE}" -gt 0 ]; then
    GRES_ARGS="--gres=gpu:${GPUS_PER_NODE}"
    TASKS_PER_NODE=${GPUS_PER_NODE}
else
    GRES_ARGS=""
    TASKS_PER_NODE=${TASKS_PER_NODE:-${GPUS}}
fi

PYTHONPATH="$DIR/..":$PYTHONPATH \
srun -p ${PARTITION} \
    --job-name=${JOB_NAME} \
    ${GRES_ARGS} \
    --ntasks=${GPUS} \
    --ntasks-per-node=${TASKS_PER_NODE} \
    --cpus-per-task=${CPUS_PER_TASK} \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$DIR/train.py" ${CONFIG} --launcher="slurm" ${PY_ARGS}
