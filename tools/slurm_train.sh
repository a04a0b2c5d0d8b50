#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#        [SUBMIT=0] [REQUEUE=1] [SIGNAL_TIME=120] [SBATCH_ARGS=...] \
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
#
# Pre-emptible jobs. Every tools/train.py run stops cleanly on SIGTERM (a
# pre-emption, `scancel --signal=TERM`) or SIGUSR1: each rank finishes its
# iteration, rank 0 writes that iteration's checkpoint, and the tasks exit with
# status 75 (PreemptionHook). This script
#   * asks Slurm for SIGUSR1 SIGNAL_TIME seconds (default 120) before the time
#     limit (srun --signal), so a job that runs out of time saves too;
#   * inside a batch job, turns status 75 into `scontrol requeue $SLURM_JOB_ID`
#     (REQUEUE=0: the job just ends); the requeued job gets --resume added and
#     continues from the checkpoint;
#   * with SUBMIT=1, submits itself as such a batch job (sbatch --requeue,
#     --signal=USR1@SIGNAL_TIME, the task layout above, SBATCH_ARGS, output
#     appended to slurm-<jobid>.out) and returns at once.
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR_ARGS=()
if [ $# -ge 4 ] && [[ "$4" != -* ]]; then
    WORK_DIR_ARGS=("--work-dir=$4")
fi
# a batch job runs a spooled copy of this script: find the tools beside the
# original
DIR=${MMHYBRID_TOOLS_DIR:-"$(cd "$(dirname "$0")" && pwd)"}
source "$DIR/slurm_srun.sh"
SIGNAL_TIME=${SIGNAL_TIME:-120}
REQUEUE_STATUS=75  # mmhybrid.engine.hooks.REQUEUE_EXIT_CODE

if [ "${SUBMIT:-0}" = 1 ]; then
    slurm_task_args
    # SBATCH_ARGS unquoted on purpose: it holds several sbatch options
    MMHYBRID_TOOLS_DIR="$DIR" SUBMIT=0 exec sbatch -p "${PARTITION}" \
        --job-name="${JOB_NAME}" "${SLURM_TASK_ARGS[@]}" \
        --requeue --signal="USR1@${SIGNAL_TIME}" --open-mode=append \
        --output="slurm-%j.out" ${SBATCH_ARGS:-} "$DIR/slurm_train.sh" "$@"
fi

if [ ${#WORK_DIR_ARGS[@]} -gt 0 ]; then
    shift 4
else
    shift 3
fi
TRAIN_ARGS=("$@")
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [[ " $* " != *" --resume"* ]]; then
    TRAIN_ARGS+=(--resume)  # a requeued job continues where it stopped
fi

# rank 0 writes it after a signal stop (PreemptionHook): srun may report the
# kill of a rank that was still exiting instead of the status 75 of the others
export MMHYBRID_STOP_FILE="${SLURM_SUBMIT_DIR:-$PWD}/.mmhybrid-stopped-${SLURM_JOB_ID:-$$}"
rm -f "${MMHYBRID_STOP_FILE}"
SRUN_ARGS="--signal=USR1@${SIGNAL_TIME} ${SRUN_ARGS:-}" \
slurm_srun "${PARTITION}" "${JOB_NAME}" "$DIR/train.py" "${CONFIG}" \
    "${WORK_DIR_ARGS[@]}" --launcher=slurm "${TRAIN_ARGS[@]}"
status=$?
if [ -e "${MMHYBRID_STOP_FILE}" ]; then
    status=$REQUEUE_STATUS
    rm -f "${MMHYBRID_STOP_FILE}"
fi
if [ "$status" = "$REQUEUE_STATUS" ]; then
    if [ "${REQUEUE:-1}" = 0 ]; then
        echo "slurm_train.sh: stopped by a signal with a checkpoint; REQUEUE=0: not requeued (rerun with --resume)" >&2
    elif [ -n "${SLURM_JOB_ID:-}" ]; then
        echo "slurm_train.sh: stopped by a signal with a checkpoint; requeueing job ${SLURM_JOB_ID}" >&2
        scontrol requeue "${SLURM_JOB_ID}" && exit 0
    else
        echo "slurm_train.sh: stopped by a signal with a checkpoint; not a batch job, so nothing to requeue (submit with SUBMIT=1, or rerun with --resume)" >&2
    fi
fi
exit "$status"
