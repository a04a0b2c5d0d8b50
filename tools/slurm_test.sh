#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#        tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
#
# As mmpretrain's, mmseg's and mmdet's tools/slurm_test.sh. GPUS is the number of
# tasks (one per GPU); GPUS_PER_NODE=0 runs CPU-only tasks (tools/slurm_srun.sh).
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
DIR="$(cd "$(dirname "$0")" && pwd)"
source "$DIR/slurm_srun.sh"

slurm_srun "${PARTITION}" "${JOB_NAME}" "$DIR/test.py" "${CONFIG}" \
    "${CHECKPOINT}" --launcher=slurm "$@"
