#!/usr/bin/env bash
# Disk a stack's install takes: runs tools/setup_env.sh into a new venv in a
# temporary folder (removed afterwards) while sampling the free space of its file
# system every half second, then prints the peak use and what the venv keeps.
# The figures behind '# disk-gb:' in requirements/constraints*.txt:
#   bash tools/speed/install_footprint.sh                  # the reference stack
#   CONSTRAINTS=requirements/constraints-min.txt bash tools/speed/install_footprint.sh
# Anything else writing to the same disk meanwhile counts too; a first mmcv build
# (no cached wheel) adds its build folder in $TMPDIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/footprint.XXXXXX")"
VENV="$WORK/venv"
SAMPLES="$WORK/free-mb.txt"
free_mb() { df -Pm "$WORK" | awk 'NR == 2 { print $4 }'; }

BEFORE_MB="$(free_mb)"
(while true; do free_mb; sleep 0.5; done) > "$SAMPLES" &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

VENV="$VENV" bash "$ROOT/tools/setup_env.sh"
kill "$SAMPLER"
free_mb >> "$SAMPLES"
LOWEST_MB="$(sort -n "$SAMPLES" | head -n 1)"
KEPT_MB="$(du -sm "$VENV" | cut -f1)"
awk -v stack="${CONSTRAINTS:-requirements/constraints.txt}" -v peak=$((BEFORE_MB - LOWEST_MB)) \
    -v kept="$KEPT_MB" -v n="$(wc -l < "$SAMPLES")" 'BEGIN {
    printf "[footprint] %s: peak %.1f GB of free space used, %.1f GB kept in the venv (%d samples)\n",
        stack, peak / 1024, kept / 1024, n }'
