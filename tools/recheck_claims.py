#!/usr/bin/env python3
"""Recompute every committed comparison (Δ, interval, verdict) from committed per-image files and records.

For each run folder under ROOT (default: results/) it recounts the discordant images from
test/NAME_correct.npy, recomputes the interval and verdict from the counts at the recorded margin
and compares them with metrics.json; for each seeds folder it remakes seeds.json from the seeds'
records and compares. What cannot be rechecked (no per-image files; a record judged by the rule
before margins) is listed as "flag". Exit 0 when nothing mismatches (with --strict: and nothing is
flagged), 1 otherwise, 2 on bad input. Needs numpy only (no Caffe).

    python3 tools/recheck_claims.py [ROOT] [--strict] [--quiet]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.cli.args import OneLineParser  # noqa: E402
from caffe_dc.report import recheck  # noqa: E402


def main() -> int:
    ap = OneLineParser(prog="recheck_claims", description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="results", help="folder of committed results (default: results)")
    ap.add_argument("--strict", action="store_true", help="fail on anything flagged, not only on a mismatch")
    ap.add_argument("--quiet", action="store_true", help="print only what is flagged or mismatched")
    a = ap.parse_args()
    if not os.path.isdir(a.root):
        print("recheck_claims: error: no such folder: %s" % a.root, file=sys.stderr)
        return 2
    try:
        findings = list(recheck.check_tree(a.root))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print("recheck_claims: error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 2
    if not findings:
        print("recheck_claims: error: no run or seeds folder under %s" % a.root, file=sys.stderr)
        return 2
    for f in findings:
        if not (a.quiet and f.status == recheck.OK):
            print("%-8s %s: %s" % (f.status, f.where, f.what))
    print(recheck.tally(findings))
    bad = any(f.status == recheck.MISMATCH or (a.strict and f.status == recheck.FLAG) for f in findings)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
