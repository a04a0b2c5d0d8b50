#!/usr/bin/env bash
# Creates (or refreshes) a pinned CPU environment in $VENV (default .venv) plus mmhybrid
# in editable mode. The pins are requirements/constraints.txt (the reference stack);
# CONSTRAINTS=<file> names a file of pins that replace some of them, e.g. the
# minimum-version stack:
#   CONSTRAINTS=requirements/constraints-min.txt VENV=.venv-min bash tools/setup_env.sh
# Every package that file does not name keeps its reference pin, so the OpenMMLab
# versions live in one place. The merged pins are written to $VENV/constraints.txt.
#
# mmcv 2.1.0 (the last release mmdet 3.3 / mmseg 1.2 accept) ships no wheel for
# torch 2.14, so it is built once from the PyPI sdist with its CPU ops and cached in
# $MMHYBRID_CACHE/wheels (default ~/.cache/mmhybrid/wheels), keyed by python, torch and
# mmcv versions. A second run reuses the wheel and installs nothing new.
set -euo pipefail
# One { } block, read whole before it runs: bash reads a script as it goes, so an edit
# (or a git pull) during the long mmcv build would otherwise run the new file from the
# old file's byte offset.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
# absolute: the mmcv build runs pip from inside the unpacked sdist
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PYTHON="${PYTHON:-python3}"
BASE_CONSTRAINTS="$ROOT/requirements/constraints.txt"
OVERRIDES="${CONSTRAINTS:-}"
case "$OVERRIDES" in ""|/*) ;; *) OVERRIDES="$PWD/$OVERRIDES" ;; esac
if [ -n "$OVERRIDES" ] && [ ! -f "$OVERRIDES" ]; then
    echo "[setup_env] CONSTRAINTS=$OVERRIDES: no such file (expected a file of name==version pins)" >&2
    exit 1
fi
CACHE="${MMHYBRID_CACHE:-$HOME/.cache/mmhybrid}"
STAMP="$VENV/.mmhybrid-stack"

log() { echo "[setup_env $(date -u +%H:%M:%S)] $*"; }

# the name of each pin, lower case, '_' read as '-' (as pip compares names)
pin_names() { sed -n 's/^\([A-Za-z0-9._-]*\)==.*$/\1/p' "$1" | tr 'A-Z_' 'a-z-'; }
# the reference pins minus every package the override file names, then the overrides
merged_constraints() {
    if [ -z "$OVERRIDES" ]; then cat "$BASE_CONSTRAINTS"; return; fi
    local names; names="$(pin_names "$OVERRIDES" | paste -sd'|')"
    echo "# requirements/constraints.txt, with the pins of ${OVERRIDES#"$ROOT"/}"
    awk -v re="^($names)==" '{ n = tolower($0); gsub(/_/, "-", n) } n !~ re' "$BASE_CONSTRAINTS"
    grep -E '^[A-Za-z0-9._-]+==' "$OVERRIDES"
}

MERGED="$(merged_constraints)"
pin() { sed -n "s/^$1==\(.*\)$/\1/p" <<< "$MERGED"; }
TORCH_V="$(pin torch)"
MMCV_V="$(pin mmcv)"

# Installing a torch stack takes gigabytes at its peak (downloads unpacked beside the
# install); running out halfway leaves a broken venv and pip's bare "[Errno 28] No
# space left on device". So a first install of the pinned torch checks the free space
# of $VENV's file system against the pins' own figure first ('# disk-gb: N' in the
# constraints file; the override file's replaces the reference one).
DISK_LINE="$( (grep -H '^# disk-gb: ' "$BASE_CONSTRAINTS" ${OVERRIDES:+"$OVERRIDES"} || true) \
    | tail -n 1)"
DISK_FILE="${DISK_LINE%%:# disk-gb: *}"
DISK_GB="${DISK_LINE##*# disk-gb: }"
torch_installed() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
        'import importlib.metadata as md, sys; sys.exit(md.version("torch").split("+")[0] != sys.argv[1])' \
        "$TORCH_V" 2>/dev/null
}
if [ -n "$DISK_GB" ] && ! torch_installed; then
    PARENT="$VENV"
    while [ ! -d "$PARENT" ]; do PARENT="$(dirname "$PARENT")"; done
    FREE_MB="$(df -Pm "$PARENT" | awk 'NR == 2 { print $4 }')"
    if [ "$FREE_MB" -lt $((DISK_GB * 1024)) ]; then
        echo "[setup_env] $VENV: $((FREE_MB / 1024)) GB free on its file system ($PARENT), ${DISK_GB} GB needed to install torch==$TORCH_V and the stack ('# disk-gb: $DISK_GB' in $DISK_FILE); free some space or put VENV= on a larger disk" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
CONSTRAINTS_FILE="$VENV/constraints.txt"
echo "$MERGED" > "$CONSTRAINTS_FILE"
# Everything is resolved against our pins; the machine-wide cap (if any) stays active too.
export PIP_CONSTRAINT="$CONSTRAINTS_FILE${PIP_CONSTRAINT:+ $PIP_CONSTRAINT}"

# Empty if mmhybrid in $VENV is the editable install of this checkout, else why not:
# its distribution must be recorded as editable from $ROOT (direct_url.json) and
# `import mmhybrid` must find $ROOT/mmhybrid. Run isolated (-I: no PYTHONPATH, no
# working directory on sys.path) so nothing but the venv's own install can answer.
editable_problem() {
    (cd / && "$PY" -I - "$ROOT" <<'PYEOF'
import importlib.metadata as md, importlib.util, json, os.path as osp, sys
from urllib.parse import unquote, urlparse
root = osp.realpath(sys.argv[1])
try:
    info = json.loads(md.distribution('mmhybrid').read_text('direct_url.json') or '{}')
except md.PackageNotFoundError:
    sys.exit(print('mmhybrid is not installed'))
url = info.get('url', '')
src = osp.realpath(unquote(urlparse(url).path)) if url.startswith('file:') else url
if not info.get('dir_info', {}).get('editable') or src != root:
    sys.exit(print(f'mmhybrid is installed from {url or "an index"}'
                   f'{" (editable)" if info.get("dir_info", {}).get("editable") else ""}'
                   f', not editable from {root}'))
spec = importlib.util.find_spec('mmhybrid')
origin = osp.realpath(spec.origin) if spec and spec.origin else None
if origin != osp.join(root, 'mmhybrid', '__init__.py'):
    sys.exit(print(f'`import mmhybrid` finds {origin}, not {root}/mmhybrid'))
PYEOF
    )
}

# Fast path: the stamp records the hash of the merged pins, the requirement files, setup.py
# and this script; if nothing changed, only the editable install of mmhybrid is checked
# (another clone's venv, or a copied one, points elsewhere) and redone if it is wrong.
REQ_HASH="$(cat "$CONSTRAINTS_FILE" "$ROOT"/requirements/{build,runtime,downstream,tests}.txt "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
    PROBLEM="$(editable_problem)"
    if [ -n "$PROBLEM" ]; then
        log "$VENV: $PROBLEM; reinstalling it"
        "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
        PROBLEM="$(editable_problem)"
        if [ -n "$PROBLEM" ]; then
            echo "[setup_env] $VENV after reinstalling mmhybrid: $PROBLEM" >&2
            exit 1
        fi
    fi
    log "environment up to date ($VENV; mmhybrid editable from $ROOT)"
    exit 0
fi

log "installing build tools and torch==$TORCH_V"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt"
"${PIP[@]}" install -q "torch==$TORCH_V" "torchvision==$(pin torchvision)" "numpy==$(pin numpy)"

PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_V-torch$TORCH_V-$PY_TAG-cpu"
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv==$MMCV_V with CPU ops (once; 5 to 15 min on 2 cores) into $WHEEL_DIR"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: "mmcv==$MMCV_V" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-"$MMCV_V".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_V"
    # torch >= 2.10 headers need C++20; mmcv 2.1 hard-codes C++17.
    TORCH_MAJOR_MINOR="$("$PY" -c 'import torch; v=torch.__version__.split("."); print(int(v[0])*100+int(v[1]))')"
    if [ "$TORCH_MAJOR_MINOR" -ge 210 ]; then
        sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    fi
    mkdir -p "$WHEEL_DIR.tmp"
    # Python's own CFLAGS carry -g: debug info for torch's template-heavy headers
    # makes the compile much slower and the wheel much bigger; nobody debugs it.
    (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        CFLAGS="${CFLAGS:-} -g0" \
        "${PIP[@]}" wheel -q --no-build-isolation --no-deps . -w "$WHEEL_DIR.tmp")
    # rename only when complete, so an interrupted build is never taken for a cached one
    rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
fi

log "installing the OpenMMLab stack"
"${PIP[@]}" install -q "$WHEEL_DIR"/mmcv-*.whl
"${PIP[@]}" install -q \
    -r "$ROOT/requirements/runtime.txt" \
    -r "$ROOT/requirements/downstream.txt" \
    -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'EOF'
import mmcv.ops, mmpretrain, mmseg, mmdet, mmhybrid  # noqa: F401
print(f'[setup_env] ok: mmhybrid {mmhybrid.__version__}, mmcv {mmcv.__version__}')
EOF
echo "$REQ_HASH" > "$STAMP"
exit 0
}
