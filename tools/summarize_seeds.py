#!/usr/bin/env python3
"""Write seeds.md / seeds.json for a folder of seed runs (DIR/seed-N/metrics.json), e.g. committed results.

`caffe-dc reproduce NET --seeds N` writes the same summary when its runs end; this remakes it
from the records alone (no Caffe), keeping each run's own commit and BLAS kernel.

    python3 tools/summarize_seeds.py results/seeds-lenet-300-100
"""
import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.report import seeds  # noqa: E402


def fail(message: str) -> int:
    print("summarize_seeds: error: %s" % message, file=sys.stderr)
    return 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="folder holding seed-N/metrics.json")
    a = ap.parse_args()
    found = {}
    for p in glob.glob(os.path.join(a.folder, "seed-*", "metrics.json")):
        m = re.fullmatch(r"seed-(\d+)", os.path.basename(os.path.dirname(p)))
        if m:
            found[int(m.group(1))] = p
    paths = [found[k] for k in sorted(found)]
    if not paths:
        return fail("no seed-N/metrics.json under %s" % a.folder)
    records, runs = [], [os.path.dirname(p) for p in paths]
    for p in paths:
        try:
            records.extend(seeds.records_of([p]))
            seeds.seed_row(records[-1], p)   # has what the summary reads
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            return fail("%s is not a run's metrics.json (%s: %s)" % (p, type(e).__name__, e))
    commands = {m.get("command") for m in records}
    command = commands.pop() if len(commands) == 1 else "; ".join(sorted(c for c in commands if c))
    nets = {m.get("net") for m in records}
    if len(nets) != 1:
        return fail("the runs are of different nets: %s" % ", ".join(sorted(map(str, nets))))
    print("wrote %s" % seeds.write(a.folder, records, runs, command, nets.pop()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
