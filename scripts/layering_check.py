#!/usr/bin/env python3
"""Checks that each folder includes only the folders its README says it may depend on.

    scripts/layering_check.py [SOURCE_DIR]

Reads every tracked .h/.cc file's `#include "..."` lines (project headers are included by
their path from the root: "server/jobs/scheduler.h") and the generated protos
("steadyeval/v1/..."), and checks them against ALLOWED below, the same table the folder
READMEs write out in words. A folder may always include itself, common/ and third-party
headers. Test code (*_test.cc, *_test_util.h, test_*.h, files under testing/, tests/,
bench/, fuzz/, examples/) may include anything, and a binary's main.cc any folder of its own
tree (server/main.cc any of server/). libtorch headers (torch/, ATen/, c10/) may
appear only under worker/ (not in the daemon, which the coordinator's tests link without
libtorch, main.cc excepted), examples/, bench/, tests/ and testing/.

Exits 1 listing each violation as FILE:LINE: FOLDER may not include HEADER.
"""
import os
import re
import subprocess
import sys

SERVER_STAGES = ["server/discovery", "server/store", "server/jobs", "server/analytics",
                 "server/ingest"]
WORKER_STAGES = ["worker", "worker/checkpoint", "worker/tokenizer", "worker/model",
                 "worker/eval", "worker/averaging"]

# folder -> folders it may include (besides itself and common/)
ALLOWED = {
    "common": [],
    "s3": [],
    "api": ["proto"],
    "server/discovery": ["proto", "api", "s3"],
    "server/store": ["proto", "api"],
    "server/jobs": ["proto", "api", "server/store"],
    "server/analytics": ["proto", "api", "server/store", "server/jobs"],
    "server/ingest": ["proto", "api", "s3", "server/store", "server/jobs", "server/analytics"],
    "server": ["proto", "api", "s3"] + SERVER_STAGES,
    "server/rpc": ["proto", "api", "server"] + SERVER_STAGES,
    "server/config": ["proto", "api", "server"] + SERVER_STAGES,
    "worker": [],
    "worker/checkpoint": ["worker"],
    "worker/tokenizer": ["worker"],
    "worker/model": ["worker", "worker/checkpoint"],
    "worker/eval": ["worker", "worker/checkpoint", "worker/tokenizer", "worker/model"],
    "worker/averaging": ["worker", "worker/checkpoint", "worker/model", "worker/eval"],
    "worker/backend": WORKER_STAGES,
    "worker/cache": [],
    "worker/daemon": ["proto", "api", "s3", "worker/eval", "worker/backend", "worker/cache"],
    "client": ["proto", "api"],
}
FREE = ("testing", "tests", "bench", "fuzz", "examples")
TORCH_OK = ("worker", "examples", "bench", "tests", "testing")
PROJECT_ROOTS = ("common", "s3", "api", "server", "worker", "client", "testing", "tests", "bench",
                 "fuzz", "examples")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')


def folder_of(path):
    """The layering unit: a top-level folder, or a stage folder under server/ or worker/
    (a model family counts as worker/model)."""
    parts = path.split("/")
    if parts[0] in ("server", "worker") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]


def is_test_code(path):
    name = os.path.basename(path)
    return (folder_of(path) in FREE or name.endswith("_test.cc") or name.startswith("test_")
            or name.endswith("_test_util.h") or name.endswith("_test_main.cc"))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    files = subprocess.check_output(["git", "-C", root, "ls-files", "*.h", "*.cc"],
                                    text=True).split()
    violations = []
    checked = 0
    for path in files:
        folder = folder_of(path)
        test_code = is_test_code(path)
        # A binary's main.cc wires its program together from any folder of its own tree.
        composes = os.path.basename(path) == "main.cc"
        if folder not in ALLOWED and not test_code:
            if folder in ("proto",) or folder in FREE:
                continue
            violations.append(f"{path}:1: folder {folder}/ has no entry in ALLOWED "
                              "(scripts/layering_check.py): add one and its README")
            continue
        checked += 1
        with open(os.path.join(root, path), encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                header = m.group(1)
                top = header.split("/")[0]
                if top in ("torch", "ATen", "c10"):
                    daemon_lib = folder == "worker/daemon" and not path.endswith("/main.cc")
                    if folder.split("/")[0] not in TORCH_OK or (daemon_lib and not test_code):
                        violations.append(f"{path}:{lineno}: {folder}/ may not include "
                                          f"libtorch header {header}")
                    continue
                if test_code:
                    continue
                if header.startswith("steadyeval/v1/"):
                    target = "proto"
                elif top in PROJECT_ROOTS:
                    target = folder_of(header)
                else:
                    continue  # third-party or system
                if target in (folder, "common") or target in ALLOWED[folder]:
                    continue
                if composes and target.split("/")[0] == folder.split("/")[0]:
                    continue
                violations.append(f"{path}:{lineno}: {folder}/ may not include {header}")
    for v in violations:
        print(v)
    print(f"layering: {checked} files checked, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
