#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine (CPUs only) for the tests.
#
# Usage: tools/ci/start_slurm.sh [STATE_DIR]     (default /tmp/mmhybrid-slurm)
#
# Installs Debian's slurm-wlm and munge when they are missing (root and apt
# needed), writes STATE_DIR/slurm.conf (node = this host, 127.0.0.1, all CPUs,
# partition "debug", no cgroups: proctrack/linuxproc, task/none), starts munged
# (if no munge daemon answers), slurmctld and slurmd, and waits until sinfo shows
# the node idle. Clients must use the same config: export
# SLURM_CONF=STATE_DIR/slurm.conf (the script prints it on its last line).
# tools/ci/stop_slurm.sh STATE_DIR stops what this started.
#
# Exit status: 0 started; 3 Slurm cannot run on this machine (the reason is on
# stderr, prefixed "SLURM-UNAVAILABLE:"); anything else is a bug.
set -uo pipefail
D=${1:-/tmp/mmhybrid-slurm}
CTLD_PORT=${SLURM_CI_CTLD_PORT:-6917}
SLURMD_PORT=${SLURM_CI_SLURMD_PORT:-6918}
unavailable() { echo "SLURM-UNAVAILABLE: $*" >&2; exit 3; }

need_install=0
for bin in slurmctld slurmd srun sinfo munged munge; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
    [ "$(id -u)" = 0 ] || unavailable "slurm-wlm/munge are not installed and this user is not root (cannot apt-get install them)"
    command -v apt-get >/dev/null || unavailable "slurm-wlm/munge are not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$D.apt.log" 2>&1; then
        apt-get update -qq >>"$D.apt.log" 2>&1
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$D.apt.log" 2>&1 \
            || unavailable "apt-get install slurm-wlm munge failed: $(tail -n 3 "$D.apt.log" | tr '\n' ' ')"
    fi
fi
[ "$(id -u)" = 0 ] || unavailable "slurmd must run as root to start jobs as their users; this user is $(id -un)"

# ---------------------------------------------------------------- munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || {
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
    }
    chown -R munge:munge /etc/munge 2>/dev/null; chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    if id munge >/dev/null 2>&1 && command -v runuser >/dev/null; then
        runuser -u munge -- munged >/dev/null 2>&1 || munged --force >/dev/null 2>&1
    else
        munged --force >/dev/null 2>&1
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 \
        || unavailable "munged does not start: $(munged --version 2>&1 | head -n1)"
    touch "$D.munged-started"
fi

# ---------------------------------------------------------------- slurm
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive "$D/slurmctld.pid" && alive "$D/slurmd.pid"; then
    export SLURM_CONF="$D/slurm.conf"
    case "$(sinfo -h -N -o '%T' 2>/dev/null | head -n1)" in
        idle*|mixed*|allocated*) echo "SLURM_CONF=$SLURM_CONF"; exit 0 ;;
    esac
fi
mkdir -p "$D/state" "$D/spool"
HOST=$(hostname -s)
CPUS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all)  # not nproc: it obeys OMP_NUM_THREADS
cat >"$D/slurm.conf" <<CONF
ClusterName=mmhybridci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF="$D/slurm.conf"

if ! slurmctld -c -f "$SLURM_CONF" >"$D/slurmctld.out" 2>&1; then
    unavailable "slurmctld does not start: $(tail -n 3 "$D/slurmctld.log" "$D/slurmctld.out" 2>/dev/null | tr '\n' ' ')"
fi
if ! slurmd -f "$SLURM_CONF" -N "$HOST" >"$D/slurmd.out" 2>&1; then
    unavailable "slurmd does not start: $(tail -n 3 "$D/slurmd.log" "$D/slurmd.out" 2>/dev/null | tr '\n' ' ')"
fi
state=""
for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1)
    case "$state" in idle*|mixed*|allocated*) break ;; esac
    sleep 0.5
done
case "$state" in
    idle*|mixed*|allocated*) ;;
    *) unavailable "the node never became idle (sinfo state '${state}'): $(tail -n 4 "$D/slurmd.log" "$D/slurmctld.log" 2>/dev/null | tr '\n' ' ')" ;;
esac
echo "SLURM_CONF=$SLURM_CONF"
