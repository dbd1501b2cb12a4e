#!/usr/bin/env bash
# Builds everything and runs every test through CTest. Usage: scripts/test.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
# The S3-compatible server the s3/ tests start (npm, from testing/s3rver/package-lock.json).
./scripts/install-s3rver.sh
BUILD_DIR=${BUILD_DIR:-build}
# CTest runs tests side by side: a test binary that loads libtorch without calling
# ConfigureThreads (which overrides this) starts no OpenBLAS pool of its own.
export OPENBLAS_NUM_THREADS=1
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900 "$@"
