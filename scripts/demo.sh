#!/usr/bin/env bash
# The steadyeval demo: a real (toy) pretraining run, evaluated live.
#
# examples/toy_pretrain trains a small Llama with libtorch autograd and AdamW on a synthetic
# corpus (facts, arithmetic, entailment, multiple choice) and writes a Hugging Face
# checkpoint every few steps. A coordinator with an embedded data dir and one local worker
# evaluate each checkpoint as it appears (raw), the parameter average of the last n
# checkpoints (avg@n) and the majority vote of their predictions (ens@n). While training
# runs the demo prints live progress; at the end the stability table (MTV, IS) and plots.
#
#   scripts/demo.sh              build (if needed) and run the demo, then stop everything
#   DEMO_KEEP=1 scripts/demo.sh  leave the coordinator running for `steadyeval` queries;
#   scripts/demo.sh stop         stops it (and anything else the demo left running)
#
# Settings (environment): DEMO_DIR (default ./demo-data, emptied at start), DEMO_STEPS
# (training steps, default 1000), DEMO_SAVE_EVERY (default 25), DEMO_AVERAGE (averaging
# windows, default 5), DEMO_ENSEMBLE (ensemble windows, default 5), DEMO_TRAIN_ARGS (extra
# trainer flags), DEMO_SKIP_BUILD=1 with DEMO_BIN=DIR (use binaries built elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=${DEMO_DIR:-$ROOT/demo-data}

# Stops the processes listed in $DEMO/pids ("PID NAME" lines), each only if that PID still
# runs NAME (a PID reused after a reboot is left alone).
stop_services() {
  [ -f "$DEMO/pids" ] || return 0
  while read -r pid name; do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "/$name "; then
      kill "$pid" 2>/dev/null && echo "stopped $name (pid $pid)"
    fi
  done <"$DEMO/pids"
  rm -f "$DEMO/pids"
}
if [ "${1:-}" = "stop" ]; then
  stop_services
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: scripts/demo.sh [stop]   (settings via DEMO_* environment variables; see the script's header)" >&2
  exit 2
fi

if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then ./scripts/build.sh >&2; fi
BIN=${DEMO_BIN:-$ROOT/${BUILD_DIR:-build}/bin}
STEPS=${DEMO_STEPS:-1000}
SAVE_EVERY=${DEMO_SAVE_EVERY:-25}
AVERAGE=${DEMO_AVERAGE:-5}
ENSEMBLE=${DEMO_ENSEMBLE:-5}
KEEP=${DEMO_KEEP:-0}
# The worker and the toy trainer share the machine: each takes one thread (--threads 1,
# which also sets OpenBLAS's pool; the environment is not needed).
for b in steadyeval-server steadyeval-worker steadyeval steadyeval-toy-train steadyeval-fixtures; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is missing; build first (scripts/build.sh)" >&2; exit 1; }
done

if [ -d "$DEMO" ] && [ -n "$(ls -A "$DEMO")" ] && [ ! -d "$DEMO/checkpoints" ]; then
  echo "demo: $DEMO exists and is not a demo folder (no checkpoints/); the demo empties its" \
       "folder, so choose another DEMO_DIR or remove it yourself" >&2
  exit 1
fi
stop_services >/dev/null 2>&1 || true
rm -rf "$DEMO"
mkdir -p "$DEMO/checkpoints" "$DEMO/logs" "$DEMO/plots"
: >"$DEMO/pids"
TRAINER=""
finish() {
  local code=$?
  [ -n "$TRAINER" ] && kill "$TRAINER" 2>/dev/null
  if [ "$KEEP" = 1 ] && [ $code -eq 0 ]; then return; fi
  stop_services >/dev/null
  wait 2>/dev/null || true
  if [ $code -ne 0 ]; then echo "demo: failed (exit $code); logs in $DEMO/logs" >&2; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

T0=$SECONDS
echo "== steadyeval demo: everything under $DEMO"
"$BIN/steadyeval-server" --data_dir "$DEMO/server" --listen 127.0.0.1:0 \
  --metrics_listen 127.0.0.1:0 --ready_file "$DEMO/server.json" --poll_interval_ms 500 \
  >"$DEMO/logs/server.out" 2>"$DEMO/logs/server.err" &
echo "$! steadyeval-server" >>"$DEMO/pids"
for _ in $(seq 100); do [ -s "$DEMO/server.json" ] && break; sleep 0.1; done
[ -s "$DEMO/server.json" ] || { echo "demo: the coordinator did not start; see $DEMO/logs/server.err" >&2; exit 1; }
ADDR=$(sed -n 's/.*"grpc": *"\([^"]*\)".*/\1/p' "$DEMO/server.json")
METRICS=$(sed -n 's/.*"metrics": *"\([^"]*\)".*/\1/p' "$DEMO/server.json")
export STEADYEVAL_SERVER=$ADDR
echo "== coordinator on $ADDR (metrics: http://$METRICS/metrics)"

"$BIN/steadyeval-worker" --coordinator "$ADDR" --name demo-worker --acquire_wait_ms 1000 \
  --threads 1 --metrics_listen 127.0.0.1:0 >"$DEMO/logs/worker.out" 2>"$DEMO/logs/worker.err" &
echo "$! steadyeval-worker" >>"$DEMO/pids"
# The worker prints its bound metrics address once it is up.
WORKER_METRICS=""
for _ in $(seq 1 300); do
  WORKER_METRICS=$(sed -n 's/.*metrics=\([0-9.:]*\).*/\1/p' "$DEMO/logs/worker.out" 2>/dev/null | head -1)
  [ -n "$WORKER_METRICS" ] && break
  sleep 0.1
done
[ -n "$WORKER_METRICS" ] && echo "== worker demo-worker (metrics: http://$WORKER_METRICS/metrics)"

# The tasks come from the same generator as the corpus; write them before training starts.
# The trainer prints the run flags that prompt exactly as its corpus is formatted.
RUN_FLAGS=$("$BIN/steadyeval-toy-train" --tasks_out "$DEMO/tasks" --tasks_only ${DEMO_TRAIN_ARGS:-} \
  2>"$DEMO/logs/tasks.log") || { cat "$DEMO/logs/tasks.log" >&2; exit 1; }
TASKS=$(cd "$DEMO/tasks" && ls -1 *.json *.jsonl | sed "s|^|$DEMO/tasks/|" | paste -sd, -)
# shellcheck disable=SC2086  # RUN_FLAGS is a list of flags
"$BIN/steadyeval" runs add demo --source "$DEMO/checkpoints" --tasks "$TASKS" $RUN_FLAGS \
  --metric toy_facts_qa=char_f1 --settle_seconds 0.2 \
  --average "$AVERAGE" --ensemble "$ENSEMBLE" >/dev/null
echo "== run 'demo' registered: tasks $(cd "$DEMO/tasks" && ls -1 *.json *.jsonl | paste -sd' ' -)"
echo "   variants: raw, avg@$AVERAGE (parameter average), ens@$ENSEMBLE (majority vote)"

"$BIN/steadyeval-toy-train" --out "$DEMO/checkpoints" \
  --steps "$STEPS" --save_every "$SAVE_EVERY" --threads 1 ${DEMO_TRAIN_ARGS:-} \
  >"$DEMO/logs/trainer.log" 2>&1 &
TRAINER=$!
echo "== training: $STEPS steps, a checkpoint every $SAVE_EVERY (log: $DEMO/logs/trainer.log)"
echo "   in another terminal: STEADYEVAL_SERVER=$ADDR $BIN/steadyeval watch demo"
echo

last=""
deadline=$((SECONDS + ${DEMO_TIMEOUT_S:-900}))
trained=0
while true; do
  if [ $trained = 0 ] && ! kill -0 "$TRAINER" 2>/dev/null; then
    if ! wait "$TRAINER"; then
      echo "demo: the trainer failed:" >&2; tail -5 "$DEMO/logs/trainer.log" >&2; TRAINER=""; exit 1
    fi
    TRAINER=""
    trained=1
    echo "   trainer: $(tail -1 "$DEMO/logs/trainer.log")"
  fi
  line=$("$BIN/steadyeval" watch demo --line --once 2>&1 || true)
  if [ "${line#* }" != "${last#* }" ]; then  # ignore the leading time
    step=$(grep '^step ' "$DEMO/logs/trainer.log" | tail -1 || true)
    if [ $trained = 0 ] && [ -n "$step" ]; then echo "   trainer: $step"; fi
    echo "$line"
    last=$line
  fi
  if [ $trained = 1 ]; then
    open=$("$BIN/steadyeval" jobs --run demo --json | grep -c '"state": *"\(pending\|leased\)"' || true)
    checkpoints=$(find "$DEMO/checkpoints" -mindepth 1 -maxdepth 1 -name 'step_*' | wc -l)
    evaluated=$("$BIN/steadyeval" checkpoints demo --json | grep -c '"state": *"evaluated"' || true)
    if [ "$open" -eq 0 ] && [ "$evaluated" -ge "$checkpoints" ]; then break; fi
  fi
  if [ $SECONDS -gt $deadline ]; then echo "demo: timed out waiting for evaluations" >&2; exit 1; fi
  sleep 2
done
echo
echo "== all $evaluated checkpoints evaluated, $((SECONDS - T0)) s after the start"
echo
echo "== latest scores of every variant, with MTV, IS and the whole curve as a sparkline"
"$BIN/steadyeval" watch demo --once
echo
echo "== stability over the final 20% of checkpoints (the paper's range). MTV: mean |score"
echo "   change| between neighbouring points; IS: share of examples whose answer changes"
"$BIN/steadyeval" stability demo
"$BIN/steadyeval" stability demo --json >"$DEMO/stability.json"
echo
echo "== stability over the whole run"
"$BIN/steadyeval" stability demo --last 100%
echo
"$BIN/steadyeval" plot demo --out "$DEMO/plots/demo.svg"
"$BIN/steadyeval" plot demo --out "$DEMO/plots/demo.png"
for task in $(cd "$DEMO/tasks" && ls -1 *.json *.jsonl | sed 's/\.jsonl\?$//'); do
  "$BIN/steadyeval" plot demo --task "$task" --out "$DEMO/plots/$task.png"
done
echo "== plots: $DEMO/plots/ ($(cd "$DEMO/plots" && ls | paste -sd' ' -))"
echo "== done in $((SECONDS - T0)) s."
if [ "$KEEP" = 1 ]; then
  echo "   The coordinator and worker keep running: STEADYEVAL_SERVER=$ADDR $BIN/steadyeval scores demo"
  echo "   Prometheus can scrape http://$METRICS/metrics and http://${WORKER_METRICS:-?}/metrics"
  echo "   (deploy/prometheus/prometheus.yml; metrics reference: docs/metrics.md)."
  echo "   Stop them with: scripts/demo.sh stop"
else
  echo "   Services stopped. The coordinator's data stays in $DEMO/server; to query it again:"
  echo "   $BIN/steadyeval-server --data_dir $DEMO/server --listen 127.0.0.1:50051"
fi
