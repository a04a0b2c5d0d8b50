# The srun line of tools/slurm_train.sh and tools/slurm_test.sh (sourced by
# both, not run on its own): one place for the task layout and the CPU mode.
#
#   slurm_srun PARTITION JOB_NAME SCRIPT [script args...]
#
# GPUS tasks (default 8), GPUS_PER_NODE per node (default 8), each with
# CPUS_PER_TASK CPUs (default 5); SRUN_ARGS are added to srun, PYTHON runs the
# script (default python). GPUS_PER_NODE=0 runs CPU-only tasks: no --gres
# request (a cluster without GPUs rejects one) and TASKS_PER_NODE tasks per node
# (default: all GPUS tasks on one node); the config must then use gloo
# (env_cfg.dist_cfg.backend='gloo', as configs/demo/* do).

# The task layout options (shared by srun and, for tools/slurm_train.sh
# SUBMIT=1, sbatch) in the array SLURM_TASK_ARGS.
slurm_task_args() {
    local gpus=${GPUS:-8}
    local gpus_per_node=${GPUS_PER_NODE:-8}
    local tasks_per_node
    SLURM_TASK_ARGS=()
    if [ "${gpus_per_node}" -gt 0 ]; then
        SLURM_TASK_ARGS+=("--gres=gpu:${gpus_per_node}")
        tasks_per_node=${gpus_per_node}
    else
        tasks_per_node=${TASKS_PER_NODE:-${gpus}}
    fi
    SLURM_TASK_ARGS+=(--ntasks="${gpus}" --ntasks-per-node="${tasks_per_node}"
                      --cpus-per-task="${CPUS_PER_TASK:-5}")
}

slurm_srun() {
    local partition=$1 job_name=$2 script=$3
    shift 3
    slurm_task_args
    # SRUN_ARGS unquoted on purpose: it holds several srun options
    PYTHONPATH="$(dirname "${script}")/..":$PYTHONPATH \
    srun -p "${partition}" \
        --job-name="${job_name}" \
        "${SLURM_TASK_ARGS[@]}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "${PYTHON:-python}" -u "${script}" "$@"
}
