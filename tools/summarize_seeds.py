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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="folder holding seed-N/metrics.json")
    a = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(a.folder, "seed-*", "metrics.json")),
                   key=lambda p: int(re.search(r"seed-(\d+)", p).group(1)))
    if not paths:
        print("summarize_seeds: error: no seed-N/metrics.json under %s" % a.folder, file=sys.stderr)
        return 2
    records = seeds.records_of(paths)
    commands = {m.get("command") for m in records}
    command = commands.pop() if len(commands) == 1 else "; ".join(sorted(c for c in commands if c))
    nets = {m["net"] for m in records}
    if len(nets) != 1:
        print("summarize_seeds: error: the runs are of different nets: %s" % ", ".join(sorted(nets)), file=sys.stderr)
        return 2
    runs = [os.path.dirname(p) for p in paths]
    print("wrote %s" % seeds.write(a.folder, records, runs, command, nets.pop()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
