#!/usr/bin/env python3
"""Write seeds.md / seeds.json for a folder of seed runs (DIR/seed-N/metrics.json), e.g. committed results.

`caffe-dc reproduce NET --seeds N` writes the same summary when its runs end; this remakes it
from the records alone (no Caffe), keeping each run's own command, commit and BLAS kernel, and
re-judging every comparison from its recorded counts by the current rule (docs/statistics.md).
A seed folder's per-image files (seed-N/test/*_correct.npy), when present, give the test sampling
the seeds share; without them it is bounded from the counts, and the summary says so.

    python3 tools/summarize_seeds.py results/seeds-lenet-300-100 [--margin PP]
"""
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caffe_dc.cli.args import OneLineParser, add_margin_arg  # noqa: E402
from caffe_dc.report import seeds  # noqa: E402


def fail(message: str) -> int:
    print("summarize_seeds: error: %s" % message, file=sys.stderr)
    return 2


def main() -> int:
    ap = OneLineParser(prog="summarize_seeds", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="folder holding seed-N/metrics.json")
    add_margin_arg(ap)
    a = ap.parse_args()
    runs = seeds.seed_runs(a.folder)
    if not runs:
        return fail("no seed-N/metrics.json under %s" % a.folder)
    records, paths = [], [os.path.join(r, "metrics.json") for r in runs]
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
    writer = " ".join(["python3", shlex.quote(os.path.relpath(os.path.abspath(sys.argv[0]), ROOT))]
                      + [shlex.quote(x) for x in sys.argv[1:]])
    margin = None if a.margin is None else a.margin / 100
    try:
        seeds.summarize(records, runs, command, nets.pop(), margin, writer)   # every check before any write
    except ValueError as e:
        return fail(str(e))
    print("wrote %s" % seeds.write(a.folder, records, runs, command, records[0].get("net"), margin, writer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
