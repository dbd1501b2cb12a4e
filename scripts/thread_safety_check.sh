#!/usr/bin/env bash
# Clang's -Wthread-safety over the project's sources (every folder: server, common, api,
# client, worker, tests, bench, fuzz, examples; test files and generated code excepted),
# syntax only: no objects, a few seconds a file, files in parallel. Each file is checked
# with the flags it is built with (compile_commands.json: the worker's torch include
# paths included). GCC ignores the ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED
# annotations, so this is the build that checks them; -Werror=thread-safety makes every
# finding an error.
#
#   scripts/thread_safety_check.sh BUILD_DIR [PATH_PREFIX...]
#     (uses BUILD_DIR/compile_commands.json; with prefixes, only files under them)
#
# A source whose text and project headers (followed transitively) never name a mutex or a
# thread-safety annotation cannot produce a finding, and is not compiled: most of the
# worker's libtorch-heavy model code (each a 10-20 s parse) falls there.
#
# Exits 0 when clean, 1 on a thread-safety finding (or any clang error), 77 when clang++ is
# not installed (CTest reports the check as skipped).
set -euo pipefail
build=${1:?usage: thread_safety_check.sh BUILD_DIR [PATH_PREFIX...]}
shift
command -v clang++ >/dev/null || { echo "SKIPPED: clang++ not installed (apt-get install clang)"; exit 77; }
python3 - "$build/compile_commands.json" "$(cd "$(dirname "$0")/.." && pwd)" "$@" <<'PY'
import concurrent.futures, json, os, re, shlex, subprocess, sys
commands, root, prefixes = sys.argv[1], sys.argv[2], tuple(sys.argv[3:])
FOLDERS = ("server/", "common/", "api/", "client/", "worker/", "tests/", "bench/", "fuzz/",
           "examples/")

def clang_command(entry):
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
        # Other warnings are the compiler build's business (-Werror there): here only
        # thread-safety findings fail.
        if a in ("-c", "-MD", "-Werror") or a.startswith("-g"):
            continue
        out.append(a)
    return ["clang++", *out, "-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta",
            "-Werror=thread-safety", "-Wno-unknown-warning-option"]

LOCKING = re.compile(r"Mutex|ABSL_[A-Z_]*(GUARDED|LOCK|CAPABILITY|ACQUIRE|RELEASE|ASSERT)")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
scanned = {}  # path -> (names a lock itself, the project headers it includes)

def scan(path):
    """Reads each project file once: whether it names a lock, and what it includes."""
    if path not in scanned:
        full = os.path.join(root, path)
        if not os.path.isfile(full):
            scanned[path] = (False, [])  # a third-party or generated header: not ours
        else:
            text = open(full, encoding="utf-8", errors="replace").read()
            scanned[path] = (bool(LOCKING.search(text)), INCLUDE.findall(text))
    return scanned[path]

def names_locks(path, seen):
    """Whether `path` or a project header it includes (transitively) names a lock."""
    if path in seen:
        return False
    seen.add(path)
    direct, includes = scan(path)
    return direct or any(names_locks(inc, seen) for inc in includes)

entries = {}
skipped = 0
for entry in json.load(open(commands)):
    src = os.path.relpath(entry["file"], root)
    if not src.startswith(FOLDERS) or src.endswith("_test.cc"):
        continue
    if prefixes and not src.startswith(prefixes):
        continue
    if src in entries:
        continue  # a file built into several targets: checked once
    if not names_locks(src, set()):
        skipped += 1
        continue
    entries[src] = entry

def check(item):
    src, entry = item
    result = subprocess.run(clang_command(entry), cwd=entry["directory"], capture_output=True,
                            text=True)
    return src, result.returncode, result.stderr

failed = []
jobs = max(1, os.cpu_count() or 1)
with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    for src, code, stderr in pool.map(check, sorted(entries.items())):
        if code != 0:
            failed.append(src)
            print(f"{src}:\n{stderr}")
by_folder = {}
for src in entries:
    folder = src.split("/")[0]
    by_folder[folder] = by_folder.get(folder, 0) + 1
print("thread-safety: {} sources checked ({}), {} naming no lock skipped, {} with findings{}".format(
    len(entries), ", ".join(f"{k} {v}" for k, v in sorted(by_folder.items())), skipped, len(failed),
    ": " + ", ".join(failed) if failed else ""))
sys.exit(1 if failed or not entries else 0)
PY
