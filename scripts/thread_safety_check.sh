#!/usr/bin/env bash
# Clang's -Wthread-safety over the coordinator's sources (the code with ABSL_GUARDED_BY /
# ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations), syntax only: no objects, a few seconds a file.
# GCC ignores the annotations, so this is the build that checks them.
#
#   scripts/thread_safety_check.sh BUILD_DIR     (uses BUILD_DIR/compile_commands.json)
#
# Exits 0 when clean, 1 on a thread-safety finding (or any clang error), 77 when clang++ is
# not installed (CTest reports the check as skipped).
set -euo pipefail
build=${1:?usage: thread_safety_check.sh BUILD_DIR}
command -v clang++ >/dev/null || { echo "SKIPPED: clang++ not installed (apt-get install clang)"; exit 77; }
python3 - "$build/compile_commands.json" "$(cd "$(dirname "$0")/.." && pwd)" <<'PY'
import json, os, shlex, subprocess, sys
commands, root = sys.argv[1], sys.argv[2]
failed = checked = 0
for entry in json.load(open(commands)):
    src = os.path.relpath(entry["file"], root)
    if not src.startswith("server/") or src.endswith("_test.cc"):
        continue
    args = shlex.split(entry["command"])
    if args[0].endswith("ccache"):
        args = args[1:]
    out = []
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT"):
            skip = True
            continue
        if a in ("-c", "-MD") or a.startswith("-g"):
            continue
        out.append(a)
    cmd = ["clang++", *out, "-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta",
           "-Werror=thread-safety", "-Wno-unknown-warning-option"]
    result = subprocess.run(cmd, cwd=entry["directory"], capture_output=True, text=True)
    checked += 1
    if result.returncode != 0:
        failed += 1
        print(f"{src}:\n{result.stderr}")
print(f"thread-safety: {checked} coordinator sources checked, {failed} with findings")
sys.exit(1 if failed or checked == 0 else 0)
PY
