#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (fuzz/README.md).
#
#   scripts/fuzz.sh TARGET[,TARGET...]|all SECONDS [libFuzzer flags...]   (SECONDS 0: build only)
#
# Builds the targets with clang, AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer
# into build-fuzz/ (or $FUZZ_BUILD_DIR: a configure of its own with -DSTEADYEVAL_FUZZ=ON;
# only the fuzz targets and the libraries they link are compiled), then runs each target
# for SECONDS seeded with fuzz/corpus/<target> and fuzz/regressions/<target>. Nothing in the
# repository is written: new corpus entries go to $FUZZ_WORK_DIR/<target>/corpus (default
# build-fuzz/work), reproducers of findings (crash-*, leak-*, timeout-*, oom-*) to
# $FUZZ_WORK_DIR/<target>/artifacts, libFuzzer's output to $FUZZ_WORK_DIR/<target>/log.
# One line per run is appended to $FUZZ_WORK_DIR/runs.tsv (target, seconds, executions,
# corpus size, result). FUZZ_JOBS=2 runs two targets at a time (default 1).
#
# A finding: fix it, copy the reproducer into fuzz/regressions/<target>/ (CTest replays it
# from then on) and rerun. Exit status 1 when any target had a finding.
#
# Debian's libtorch, Abseil, Protobuf, gRPC and RocksDB are built with GCC and without
# sanitizers: clang-built code links them through the same libstdc++, and their own memory
# accesses are not checked (scripts/sanitizers/ lists the suppressions for their leaks).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(safetensors config task tokenizer keys steps store)
usage() {
  echo "usage: scripts/fuzz.sh TARGET[,TARGET...]|all SECONDS [libFuzzer flags...];" \
       "targets: ${TARGETS[*]}" >&2
  exit 2
}
[ $# -ge 2 ] || usage
which=$1
seconds=$2
shift 2
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
if [ "$which" = all ]; then
  selected=("${TARGETS[@]}")
else
  IFS=, read -r -a selected <<<"$which"
  for name in "${selected[@]}"; do
    [[ " ${TARGETS[*]} " == *" $name "* ]] || usage
  done
fi

./scripts/install-deps.sh
# libFuzzer's runtime is in libclang-rt-14-dev, which Debian's clang only recommends.
resource_dir=$(clang++ -print-resource-dir)
if [ ! -f "$resource_dir/lib/linux/libclang_rt.fuzzer-x86_64.a" ]; then
  echo "fuzz: installing libclang-rt-14-dev (libFuzzer's runtime)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends libclang-rt-14-dev
fi

BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
WORK_DIR=${FUZZ_WORK_DIR:-$BUILD_DIR/work}
JOBS=${JOBS:-$(nproc)}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTEADYEVAL_FUZZ=ON \
  -DSTEADYEVAL_WERROR=OFF -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_C_FLAGS="$flags" >/dev/null
echo "fuzz: building ${selected[*]} in $BUILD_DIR with $JOBS jobs" >&2
ninja -C "$BUILD_DIR" -j "$JOBS" "${selected[@]/%/_fuzzer}"
[ "$seconds" -gt 0 ] || exit 0

SUPP=$PWD/scripts/sanitizers
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp"
export OPENBLAS_NUM_THREADS=1
mkdir -p "$WORK_DIR"
summary=$WORK_DIR/runs.tsv
[ -f "$summary" ] || printf 'target\tseconds\texecutions\tcorpus\tresult\n' >"$summary"

run_target() {  # run_target NAME [libFuzzer flags...]
  local name=$1
  shift
  local work=$WORK_DIR/$name
  mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
  echo "fuzz: $name for ${seconds}s (log: $work/log)" >&2
  local rc=0
  # The first folder receives new corpus entries; the committed ones are only read.
  TMPDIR=$work/tmp "$BUILD_DIR/bin/${name}_fuzzer" -max_total_time="$seconds" \
    -print_final_stats=1 -timeout=30 -artifact_prefix="$work/artifacts/" "$@" \
    "$work/corpus" "fuzz/corpus/$name" "fuzz/regressions/$name" >"$work/log" 2>&1 || rc=$?
  local execs corpus result
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  corpus=$(grep -oE '(DONE|INITED|pulse|NEW|REDUCE).*corp: [0-9]+' "$work/log" | tail -1 |
           sed -E 's/.*corp: //')
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="finding (exit $rc): $(ls "$work/artifacts" | tr '\n' ' ')"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$seconds" "${execs:-?}" "${corpus:-?}" "$result" >>"$summary"
  echo "fuzz: $name: ${execs:-?} executions, corpus ${corpus:-?}, $result" >&2
  [ "$rc" -eq 0 ]
}

failed=0
running=0
for name in "${selected[@]}"; do
  if [ "${FUZZ_JOBS:-1}" -le 1 ]; then
    run_target "$name" "$@" || failed=1
    continue
  fi
  run_target "$name" "$@" &
  running=$((running + 1))
  if [ "$running" -ge "${FUZZ_JOBS}" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
echo "fuzz: runs recorded in $summary" >&2
exit "$failed"
