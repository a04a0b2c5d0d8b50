#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#
# As mmpretrain's, mmseg's and mmdet's tools/slurm_train.sh. WORK_DIR may be
# left out when train.py options follow CONFIG directly (the 4th argument starts
# with '-'): the work dir then comes from --work-dir, the config, or the config's
# name, as for tools/train.py.
#
# GPUS is the number of tasks (one per GPU). GPUS_PER_NODE=0 runs CPU-only tasks
# (tools/slurm_srun.sh), e.g.
#   GPUS=2 GPUS_PER_NODE=0 CPUS_PER_TASK=1 tools/slurm_train.sh debug demo \
#       configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py work_dirs/demo
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR_ARGS=()
if [ $# -ge 4 ] && [[ "$4" != -* ]]; then
    WORK_DIR_ARGS=("--work-dir=$4")
    shift 4
else
    shift 3
fi
DIR="$(cd "$(dirname "$0")" && pwd)"
source "$DIR/slurm_srun.sh"

slurm_srun "${PARTITION}" "${JOB_NAME}" "$DIR/train.py" "${CONFIG}" \
    "${WORK_DIR_ARGS[@]}" --launcher=slurm "$@"
