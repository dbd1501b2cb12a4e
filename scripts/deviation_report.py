#!/usr/bin/env python3
"""Summarises the numeric tests' tolerance checks across kernel sets.

Usage: scripts/deviation_report.py BUILD_DIR/deviations

Every numeric test binary (testing/numeric_test_main.cc) writes one JSON line per check to
deviations/<ctest name>.jsonl: the kernel sets it ran under, the test, the bound's label,
the deviation seen and the tolerance. This prints, per test and bound, the largest
deviation over all kernel sets next to its tolerance, and the kernel sets that ran.
Entries that used more than a tenth of their tolerance are marked: the bounds are meant to
leave that margin. Exits 1 when no check was recorded (the log is broken), else 0; the
tests themselves fail on a deviation beyond its tolerance.
"""
import collections
import glob
import json
import os
import sys

MARGIN = 0.1


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    worst = {}  # (binary, test, what) -> (ratio, deviation, tolerance, kernels)
    kernels_seen = collections.Counter()
    checks = 0
    for path in sorted(glob.glob(os.path.join(argv[1], "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                checks += 1
                kernels_seen[r["kernels"]] += 1
                ratio = r["deviation"] / r["tolerance"] if r["tolerance"] > 0 else float("inf")
                key = (r["binary"], r["test"], r["what"])
                if key not in worst or ratio > worst[key][0]:
                    worst[key] = (ratio, r["deviation"], r["tolerance"], r["kernels"])
    if checks == 0:
        print(f"no tolerance checks recorded under {argv[1]}: did the numeric tests run?")
        return 1
    print(f"{checks} tolerance checks under {len(kernels_seen)} kernel sets:")
    for kernels, n in sorted(kernels_seen.items()):
        print(f"  {kernels}: {n} checks")
    print()
    print(f"{'used':>7}  {'largest dev':>11}  {'tolerance':>10}  test [bound] (kernels)")
    over = 0
    for (binary, test, what), (ratio, dev, tol, kernels) in sorted(
            worst.items(), key=lambda kv: -kv[1][0]):
        flag = " <-- above a tenth" if ratio > MARGIN else ""
        over += ratio > MARGIN
        print(f"{ratio:7.4f}  {dev:11.3e}  {tol:10.3e}  {binary} {test} [{what}] ({kernels}){flag}")
    print()
    print(f"{len(worst)} checked quantities; {over} used more than {MARGIN:g} of their tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
