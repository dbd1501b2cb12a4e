#!/usr/bin/env bash
# The steadyeval demo: a coordinator with an embedded data dir, one local worker, and a
# "trainer" that writes a series of small Llama checkpoints into a folder over time. The
# run is registered on four sample tasks (examples/tasks: multiple choice scored by acc and
# acc_norm, generation scored by exact_match and char_f1 with shots from a train split) with averaging (avg@2, avg@3) and ensemble (ens@3)
# windows; the raw score table is printed as results arrive, then every variant's scores
# and the stability table (MTV, IS).
#
#   scripts/demo.sh            build (if needed) and run the demo
#   DEMO_STEPS=8 DEMO_INTERVAL_MS=3000 scripts/demo.sh
# Everything lives in ./demo-data (removed at the start of each demo); the services are
# stopped when the demo ends or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
./scripts/build.sh >&2
BIN=$ROOT/${BUILD_DIR:-build}/bin
DEMO=${DEMO_DIR:-$ROOT/demo-data}
STEPS=${DEMO_STEPS:-8}
INTERVAL_MS=${DEMO_INTERVAL_MS:-3000}
export OPENBLAS_NUM_THREADS=1

rm -rf "$DEMO"
mkdir -p "$DEMO/checkpoints" "$DEMO/logs"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "== steadyeval demo: data in $DEMO"
"$BIN/steadyeval-fixtures" tokenizer --out "$DEMO/tokenizer" >"$DEMO/logs/fixtures.log" 2>&1

"$BIN/steadyeval-server" --data_dir "$DEMO/server" --listen 127.0.0.1:0 \
  --metrics_listen 127.0.0.1:0 --ready_file "$DEMO/server.json" --poll_interval_ms 500 \
  >"$DEMO/logs/server.out" 2>"$DEMO/logs/server.err" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$DEMO/server.json" ] && break; sleep 0.1; done
[ -s "$DEMO/server.json" ] || { echo "server did not start; see $DEMO/logs/server.err" >&2; exit 1; }
ADDR=$(sed -n 's/.*"grpc": *"\([^"]*\)".*/\1/p' "$DEMO/server.json")
METRICS=$(sed -n 's/.*"metrics": *"\([^"]*\)".*/\1/p' "$DEMO/server.json")
echo "== coordinator on $ADDR (metrics http://$METRICS/metrics)"
export STEADYEVAL_SERVER=$ADDR

"$BIN/steadyeval-worker" --coordinator "$ADDR" --name demo-worker --acquire_wait_ms 1000 \
  >"$DEMO/logs/worker.out" 2>"$DEMO/logs/worker.err" &
PIDS+=($!)

step_list=$(seq -s, 100 100 $((STEPS * 100)))
"$BIN/steadyeval-fixtures" series --out "$DEMO/checkpoints" --steps "$step_list" \
  --interval_ms "$INTERVAL_MS" --tokenizer "$DEMO/tokenizer/tokenizer.model" \
  >"$DEMO/logs/trainer.log" 2>&1 &
TRAINER=$!
PIDS+=($TRAINER)
echo "== trainer writing $STEPS checkpoints (steps $step_list), one every ${INTERVAL_MS} ms"

"$BIN/steadyeval" runs add demo --source "$DEMO/checkpoints" \
  --tasks "$ROOT/examples/tasks/arith_mc.jsonl,$ROOT/examples/tasks/qa_gen.json,$ROOT/examples/tasks/ja_qa.json:QA,$ROOT/examples/tasks/en_commonsense_mc.jsonl:MC" \
  --few_shots_from "$ROOT/examples/tasks/train" --metric en_commonsense_mc=acc_norm \
  --few_shots 4 --settle_seconds 0.5 --average 2,3 --ensemble 3 >/dev/null
echo "== run 'demo' registered; waiting for evaluations"

last=""
deadline=$((SECONDS + 600))
while true; do
  evaluated=$("$BIN/steadyeval" checkpoints demo --json | grep -o '"state": *"evaluated"' | wc -l || true)
  open_jobs=$("$BIN/steadyeval" jobs --run demo --json | grep -o '"state": *"\(pending\|leased\)"' | wc -l || true)
  table=$("$BIN/steadyeval" scores demo --variant raw 2>/dev/null || true)
  if [ "$table" != "$last" ]; then
    echo
    echo "-- $(date +%T): $evaluated/$STEPS checkpoints evaluated"
    echo "$table"
    last=$table
  fi
  if [ "$evaluated" -ge "$STEPS" ] && [ "$open_jobs" -eq 0 ] && ! kill -0 "$TRAINER" 2>/dev/null; then break; fi
  if [ $SECONDS -gt $deadline ]; then echo "demo: timed out waiting for evaluations" >&2; exit 1; fi
  sleep 1
done

echo
echo "== scores of every variant (raw, avg@n: averaged checkpoints, ens@n: ensembles)"
"$BIN/steadyeval" scores demo --variant all
echo
echo "== stability over all points (MTV: mean |score change| between neighbours; IS: share of"
echo "   examples whose answer changes between neighbours)"
"$BIN/steadyeval" stability demo --steps "0:$((STEPS * 100))"
echo
echo "== checkpoints"
"$BIN/steadyeval" checkpoints demo
echo
echo "== jobs"
"$BIN/steadyeval" jobs --run demo
echo
echo "== done: services stopped. Logs in $DEMO/logs; the coordinator's data stays in $DEMO/server"
echo "   (restart it with: $BIN/steadyeval-server --data_dir $DEMO/server --listen 127.0.0.1:50051)"
