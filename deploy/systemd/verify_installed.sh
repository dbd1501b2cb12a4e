#!/bin/sh
# deploy_systemd_verify: `cmake --install` into a fresh prefix, then `systemd-analyze verify`
# on the installed units, the worker template as its instance steadyeval-worker@0.service.
# Fails when verify fails (an ExecStart binary missing from PREFIX/bin, say) and also when
# it prints anything: systemd only warns about a setting it cannot parse, and ignores it.
# Usage: verify_installed.sh CMAKE BUILD_DIR WORK_DIR SYSTEMD_ANALYZE
set -eu
cmake=$1 build=$2 work=$3 analyze=$4
prefix=$work/prefix
units=$prefix/lib/systemd/system
rm -rf "$work" && mkdir -p "$work"

if ! "$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1; then
  cat "$work/install.log"
  echo "FAIL: cmake --install $build --prefix $prefix failed (build the default target first)"
  exit 1
fi
for f in bin/steadyeval-server bin/steadyeval-worker bin/steadyeval bin/libsteadyeval_spm.so \
         share/steadyeval/converters/dcp_to_hf.py lib/systemd/system/steadyeval-server.service \
         "lib/systemd/system/steadyeval-worker@.service"; do
  [ -e "$prefix/$f" ] || { echo "FAIL: $prefix/$f was not installed"; exit 1; }
done
# The installed worker loads the SentencePiece plugin installed beside it (not the build
# tree's copy, which it would fall back to), and the installed server accepts the installed
# example configs (their checkpoint folders, /srv/checkpoints/..., made here).
"$prefix/bin/steadyeval-worker" check --json >"$work/check.json" 2>"$work/check.err" || {
  cat "$work/check.json" "$work/check.err"; echo "FAIL: installed steadyeval-worker check"; exit 1; }
grep -q "\"sentencepiece_plugin\":\"$prefix/bin/libsteadyeval_spm.so\"" "$work/check.json" || {
  cat "$work/check.json"
  echo "FAIL: the installed worker did not load $prefix/bin/libsteadyeval_spm.so"; exit 1; }
configs=$prefix/share/steadyeval/examples/config
n=0
for example in "$configs"/*.yaml; do
  [ -e "$example" ] || break
  case $example in *.checked.yaml) continue ;; esac
  n=$((n + 1))
  checked=${example%.yaml}.checked.yaml
  sed "s|/srv/checkpoints|$work/checkpoints|g" "$example" >"$checked"
  mkdir -p "$work/checkpoints/llm-1b-ja"
  if ! "$prefix/bin/steadyeval-server" --check --config "$checked" --data_dir "$work/data" \
       >"$work/check-config.log" 2>&1; then
    cat "$work/check-config.log"
    echo "FAIL: steadyeval-server --check on the installed example $example"; exit 1
  fi
  rm -f "$checked"
done
[ $n -ge 2 ] || { echo "FAIL: expected the example configs in $configs, found $n"; exit 1; }

# The units must name this prefix's binaries, not the default /usr/local.
if grep -n '/usr/local/' "$units"/*.service; then
  echo "FAIL: an installed unit still names /usr/local/ instead of $prefix"; exit 1
fi

# systemd-analyze verify needs no running systemd; --man=no skips the Documentation= check.
mkdir -p "$work/verify"
cp "$units/steadyeval-server.service" "$work/verify/"
cp "$units/steadyeval-worker@.service" "$work/verify/steadyeval-worker@0.service"
set +e
"$analyze" verify --man=no "$work/verify/steadyeval-server.service" \
  "$work/verify/steadyeval-worker@0.service" >"$work/verify.log" 2>&1
rc=$?
set -e
cat "$work/verify.log"
if [ $rc -ne 0 ] || [ -s "$work/verify.log" ]; then
  echo "FAIL: systemd-analyze verify (exit $rc) on the units installed in $units"
  exit 1
fi
echo "ok: units installed in $units verify cleanly"
