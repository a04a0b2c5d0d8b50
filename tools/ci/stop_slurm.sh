#!/usr/bin/env bash
# Stop the cluster started by tools/ci/start_slurm.sh STATE_DIR (by pid file).
D=${1:-/tmp/mmhybrid-slurm}
export SLURM_CONF="$D/slurm.conf"
for pidfile in "$D/slurmd.pid" "$D/slurmctld.pid"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
done
# munged only if this script's cluster started it and no other cluster on
# this machine (another test session) still has Slurm daemons that use it
if [ -e "$D.munged-started" ] && ! pgrep -x slurmctld >/dev/null \
        && ! pgrep -x slurmd >/dev/null; then
    pid=$(cat /run/munge/munged.pid 2>/dev/null)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -f "$D.munged-started"
fi
exit 0
