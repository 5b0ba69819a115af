#!/usr/bin/env python3
"""Write frontier.md / frontier.json / frontier.png: one net's budgets, each a folder of seed runs with its seeds.json.

Each folder is first summarized by tools/summarize_seeds.py; this puts the summaries side by side, by rate,
and names the highest budget whose mean change over seeds is non-inferior (no Caffe needed).

    python3 tools/summarize_frontier.py results/mnist/frontier-lenet-300-100 \\
        results/mnist/frontier-lenet-300-100/40x results/mnist/seeds-lenet-300-100 results/mnist/frontier-lenet-300-100/80x
"""
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caffe_dc.cli.args import OneLineParser  # noqa: E402
from caffe_dc.report import frontier  # noqa: E402


def main() -> int:
    ap = OneLineParser(prog="summarize_frontier", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to write frontier.md, frontier.json and frontier.png into")
    ap.add_argument("budgets", nargs="+", help="folders of seed runs (seed-N/), each with its seeds.json")
    ap.add_argument("--no-plot", action="store_true", help="write no frontier.png (no matplotlib needed)")
    a = ap.parse_args()
    if len(set(map(os.path.abspath, a.budgets))) != len(a.budgets):
        return fail("a folder is given twice")
    if not a.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return fail("the plot needs matplotlib (or give --no-plot)")
    writer = " ".join(["python3", shlex.quote(os.path.relpath(os.path.abspath(sys.argv[0]), ROOT))]
                      + [shlex.quote(x) for x in sys.argv[1:]])
    try:
        doc = frontier.summarize(a.budgets, writer)   # every folder read and checked before any write
    except (OSError, ValueError, KeyError, TypeError) as e:
        return fail(str(e) if isinstance(e, ValueError) else "%s: %s" % (type(e).__name__, e))
    for path in frontier.write(a.out, doc, with_plot=not a.no_plot):
        print("wrote %s" % path)
    return 0


def fail(message: str) -> int:
    print("summarize_frontier: error: %s" % message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
