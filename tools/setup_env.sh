#!/usr/bin/env bash
# Creates (or refreshes) the reference environment in $VENV (default .venv):
# the pinned CPU stack of requirements/constraints.txt plus mmhybrid in editable mode.
#
# mmcv 2.1.0 (the last release mmdet 3.3 / mmseg 1.2 accept) ships no wheel for
# torch 2.14, so it is built once from the PyPI sdist with its CPU ops and cached in
# $MMHYBRID_CACHE/wheels (default ~/.cache/mmhybrid/wheels), keyed by python, torch and
# mmcv versions. A second run reuses the wheel and installs nothing new.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
# absolute: the mmcv build runs pip from inside the unpacked sdist
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
CACHE="${MMHYBRID_CACHE:-$HOME/.cache/mmhybrid}"
STAMP="$VENV/.mmhybrid-stack"

pin() { sed -n "s/^$1==\(.*\)$/\1/p" "$CONSTRAINTS"; }
TORCH_V="$(pin torch)"
MMCV_V="$(pin mmcv)"

log() { echo "[setup_env] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
# Everything is resolved against our pins; the machine-wide cap (if any) stays active too.
export PIP_CONSTRAINT="$CONSTRAINTS${PIP_CONSTRAINT:+ $PIP_CONSTRAINT}"

# Fast path: the stamp records the hash of every requirement file; if nothing changed,
# only the editable install of mmhybrid itself is checked.
REQ_HASH="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
    log "environment up to date ($VENV)"
    exit 0
fi

log "installing build tools and torch==$TORCH_V"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt"
"${PIP[@]}" install -q "torch==$TORCH_V" "torchvision==$(pin torchvision)" "numpy==$(pin numpy)"

PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_V-torch$TORCH_V-$PY_TAG-cpu"
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv==$MMCV_V with CPU ops (once; about 13 min on 2 cores) into $WHEEL_DIR"
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
