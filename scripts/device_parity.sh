#!/usr/bin/env bash
# Per-token log-prob parity of a device against the CPU on every committed model fixture
# (tests/fixtures/{llama,gpt_neox,gpt2,formats}): runs `steadyeval-eval logprobs` on
# --device cpu and on --device DEVICE and prints the largest difference per fixture.
# fp32 fixtures must agree within 1e-4 (exit 1 otherwise); fixtures stored in fp16/bf16
# run in that dtype on CUDA, so their difference is printed, not judged.
#
#   scripts/device_parity.sh BIN_DIR [DEVICE]     # DEVICE defaults to cuda
#
# BIN_DIR holds steadyeval-eval (a full build, or -DSTEADYEVAL_TORCH_ONLY=ON on a GPU
# machine with its own libtorch: README "Building the evaluation core alone").
set -euo pipefail
bin_dir=${1:?usage: scripts/device_parity.sh BIN_DIR [DEVICE]}
device=${2:-cuda}
root=$(cd "$(dirname "$0")/.." && pwd)
eval_bin="$bin_dir/steadyeval-eval"
[[ -x $eval_bin ]] || { echo "error: $eval_bin not found (build steadyeval-eval first)" >&2; exit 2; }
python=$(command -v python3)

status=0
for dir in "$root"/tests/fixtures/{llama,gpt_neox,gpt2,formats}/*/; do
  dir=${dir%/}
  [[ -f $dir/config.json ]] || continue
  expected=$dir/expected.json
  [[ -f $expected ]] || expected=$root/tests/fixtures/llama/gqa/expected.json
  tokens=$("$python" -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["tokens"])))' "$expected")
  cpu=$("$eval_bin" logprobs --checkpoint "$dir" --tokens "$tokens" --device cpu --json)
  dev=$("$eval_bin" logprobs --checkpoint "$dir" --tokens "$tokens" --device "$device" --json)
  dtype=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("torch_dtype","float32"))' "$dir/config.json")
  line=$("$python" - "$cpu" "$dev" "$dtype" <<'PY'
import json, sys
a = json.loads(sys.argv[1])["token_logprobs"][1:]
b = json.loads(sys.argv[2])["token_logprobs"][1:]
worst = max(abs(x - y) for x, y in zip(a, b))
judged = sys.argv[3] in ("float32", "")
ok = worst <= 1e-4 or not judged
print(f"{worst:.3e} {'ok' if ok else 'FAIL'}{'' if judged else ' (' + sys.argv[3] + ', not judged)'}")
PY
)
  printf '%-48s %s\n' "${dir#$root/tests/fixtures/}" "$line"
  [[ $line == *FAIL* ]] && status=1
done
exit $status
