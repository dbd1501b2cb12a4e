#!/usr/bin/env bash
# Installs dependencies (idempotent) and builds everything into ./build (or $BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
# Paths relative to the checkout, so ccache hits across clones in other folders. With debug
# info (-g1) ccache would also hash the build folder (for DW_AT_comp_dir) and miss every
# file in a new clone: NOHASHDIR keeps the first builder's folder in the line tables instead.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTEADYEVAL_WERROR=ON ${CMAKE_ARGS:-} >/dev/null
echo "build: compiling into $BUILD_DIR with $JOBS jobs (first build takes several minutes: libtorch headers are heavy)" >&2
ninja -C "$BUILD_DIR" -j "$JOBS" "$@"
