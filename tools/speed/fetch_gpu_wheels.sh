#!/usr/bin/env bash
# Collects, into .whl/, the pure-Python wheels that tools/speed/gpu_check.sh
# installs on a CUDA machine that has torch but no OpenMMLab packages and no
# network: mmengine, mmpretrain, mmcv-lite (mmcv 2.1.0 built without ops, which
# is all mmpretrain's ViT needs) and their small pure-Python dependencies.
#   bash tools/speed/fetch_gpu_wheels.sh [PYTHON_VERSION (default 3.12)]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYV="${1:-3.12}"
mkdir -p .whl
dl() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$@"
}
dl mmengine==0.10.7 mmpretrain==1.2.0 addict==2.4.0 yapf termcolor mat4py model-index \
    ordered-set platformdirs importlib-metadata==8.7.0 zipp
if ! ls .whl/mmcv_lite-2.1.0-*.whl >/dev/null 2>&1; then
    TMP="$(mktemp -d)"
    python3 -m pip download -q --no-deps --no-binary :all: mmcv==2.1.0 -d "$TMP"
    tar -xzf "$TMP"/mmcv-2.1.0.tar.gz -C "$TMP"
    (cd "$TMP/mmcv-2.1.0" && MMCV_WITH_OPS=0 python3 -m pip wheel -q --no-deps \
        --no-build-isolation . -w "$OLDPWD/.whl")
    rm -rf "$TMP"
fi
ls -1 .whl
