"""Every committed comparison recomputed from what is committed (tools/recheck_claims.py).

A run folder's ``metrics.json`` records, for each comparison, the discordant
counts and the interval and verdict made from them; its ``test/`` folder holds
each model's per-image correctness. A check recounts the discordant images
from those files, recomputes the interval and verdict from the counts by the
current rule (``stats.compare`` at the recorded margin), and compares. A seeds
folder's ``seeds.json`` is compared with the summary the shipped code makes
from its seeds' records (``report.seeds.summarize``).

What cannot be rechecked is said, not skipped: counts with no per-image files
behind them rest on ``metrics.json`` alone, and a record made before margins
existed was judged by the earlier rule (its verdict is shown again under the
current one). A run made for a target rate is checked against it: the committed
``model.dcz`` must be the size ``metrics.json`` records, and within ``RATE_TOLERANCE``
of the budget's rate.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterator, List, Mapping, NamedTuple, Optional

from caffe_dc.algorithms import stats
from caffe_dc.report import seeds
from caffe_dc.report.json_out import dumps

OK, FLAG, MISMATCH = "ok", "flag", "MISMATCH"
# JSON keeps 17 digits, but libm's erfc, exp and log may differ in the last bits between machines
REL = 1e-9
# issue 27's promise for a budget: the file's rate within 3% of the target, either way
RATE_TOLERANCE = 0.03


class Finding(NamedTuple):
    status: str        # OK, FLAG or MISMATCH
    where: str         # folder, and the comparison
    what: str


def _close(a, b, path: str = "") -> List[str]:
    """Where two JSON values differ (floats to REL), as dotted paths; [] when they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = ["%s.%s: only on one side" % (path, k) for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _close(a[k], b[k], "%s.%s" % (path, k))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return ["%s: %d vs %d items" % (path, len(a), len(b))]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, "%s[%d]" % (path, i))]
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
                math.isclose(a, b, rel_tol=REL, abs_tol=1e-15):
            return []
        return ["%s: %r vs %r" % (path, a, b)]
    return [] if a == b else ["%s: %r vs %r" % (path, a, b)]


def _pp(x: float) -> str:
    return "%+.2f" % (100 * x)


def _old_verdict(rec: Mapping) -> str:
    """The verdict of the rule before margins: a loss or gain when the interval left 0, else none measurable."""
    return "loss" if rec["diff_high"] < 0 else "gain" if rec["diff_low"] > 0 else "no measurable difference"


def check_run(run: str, m: Mapping, twin: Optional[str] = None) -> Iterator[Finding]:
    """The comparisons of one run's ``metrics.json`` (``m``), against its per-image files where they exist,
    else against those of ``twin``, a folder of the same run (same command and model.dcz sha256)."""
    n_test = m["final_test"]["n"]
    for name, key, before in seeds.COMPARISONS:
        rec = m.get("paired", {}).get(key)
        if rec is None:
            continue
        where = "%s %s" % (run, key)
        b, c, n = rec["only_a"], rec["only_b"], rec["n"]
        files = run if os.path.isfile(seeds.correct_path(run, seeds.AFTER)) or twin is None else twin
        x = seeds.load_correct(files, before, n)
        y = seeds.load_correct(files, seeds.AFTER, n)
        source = "the per-image files" + ("" if files == run else " of %s (the same command and model.dcz)" % twin)
        if x is None or y is None:
            yield Finding(FLAG, where, "no per-image files (%s): the counts %d/%d of %d rest on metrics.json alone"
                          % (", ".join(os.path.relpath(seeds.correct_path(run, k), run) for k in (before, seeds.AFTER)),
                             b, c, n))
        else:
            got = stats.counts_of(x, y)
            if got != (b, c, n) or n != n_test:
                yield Finding(MISMATCH, where, "%s give %d/%d of %d, metrics.json %d/%d of %d (test n %d)"
                              % ((source,) + got + (b, c, n, n_test)))
            else:
                yield Finding(OK, where, "counts %d/%d of %d from %s" % (b, c, n, source))
            wrong = [what for what, k, arr in (("reference", "reference_test", x if before == "reference" else None),
                                               ("compressed", "final_test", y))
                     if arr is not None and m.get(k, {}).get("correct") not in (None, int(arr.sum()))]
            if wrong:
                yield Finding(MISMATCH, where, "the %s's correct count differs from its per-image file"
                              % " and ".join(wrong))
        if "margin" not in rec:
            now = stats.compare(b, c, n, margin=seeds.recorded_margin(m))
            yield Finding(FLAG, where, "judged by the rule before margins (recorded %s [%s, %s] pp, %r); by the "
                          "current rule at the default margin %.2f pp: %s [%s, %s] pp, %s"
                          % (_pp(rec["diff"]), _pp(rec["diff_low"]), _pp(rec["diff_high"]), _old_verdict(rec),
                             100 * now["margin"], _pp(now["diff"]), _pp(now["diff_low"]), _pp(now["diff_high"]),
                             now["verdict"]))
            continue
        now = stats.compare(b, c, n, margin=rec["margin"], alpha=rec.get("alpha", stats.ALPHA))
        keys = ("diff", "diff_low", "diff_high", "mcnemar_p", "margin", "verdict")
        diffs = _close({k: rec.get(k) for k in keys}, {k: now[k] for k in keys})
        if diffs:
            yield Finding(MISMATCH, where, "recomputed from the counts: " + "; ".join(diffs))
        else:
            yield Finding(OK, where, "%s [%s, %s] pp, %s at a margin of %.2f pp, recomputed from the counts"
                          % (_pp(now["diff"]), _pp(now["diff_low"]), _pp(now["diff_high"]), now["verdict"],
                             100 * now["margin"]))


def check_rate(run: str, m: Mapping) -> Iterator[Finding]:
    """A run made for a target rate: its file's size (``model.dcz`` where committed) against that rate."""
    target = ((m.get("schedule") or {}).get("budget") or {}).get("target_rate")
    if target is None:
        return
    where = "%s rate" % run
    dcz = os.path.join(run, "model.dcz")
    size = os.path.getsize(dcz) if os.path.isfile(dcz) else m["file_bytes"]
    if size != m["file_bytes"]:
        yield Finding(MISMATCH, where, "model.dcz holds %d bytes, metrics.json records %d" % (size, m["file_bytes"]))
        return
    rate = m["dense_bytes"] / size
    off = rate / target - 1
    what = "%.1fx, %+.1f%% from the budget's %gx (%s)" % (
        rate, 100 * off, target, "model.dcz" if os.path.isfile(dcz) else "the size metrics.json records")
    if abs(off) > RATE_TOLERANCE:
        # a run judged before margins was made before the budget promised its rate: said, not failed
        early = any("margin" not in rec for rec in m.get("paired", {}).values())
        yield Finding(FLAG if early else MISMATCH, where, what + ": past the %g%% the budget allows%s" % (
            100 * RATE_TOLERANCE, " (made before that promise, when comparisons had no margin)" if early else ""))
    else:
        yield Finding(OK, where, what)


def check_summary(folder: str, s: Mapping) -> Iterator[Finding]:
    """A committed ``seeds.json`` (``s``) against the summary made again from its seeds' records."""
    runs = seeds.seed_runs(folder)
    records = seeds.records_of([os.path.join(r, "metrics.json") for r in runs])
    given = s.get("margin_given_pp")
    again = json.loads(dumps(seeds.summarize(records, runs, s.get("command"), s.get("net"),
                                             None if given is None else given / 100, s.get("written_by"))))
    strip = [dict(r, run=None) for r in s.get("runs", [])], [dict(r, run=None) for r in again["runs"]]
    diffs = _close(dict(s, runs=strip[0]), dict(again, runs=strip[1]))
    where = os.path.join(folder, "seeds.json")
    if diffs:
        yield Finding(MISMATCH, where, "differs from the summary of its records: " + "; ".join(diffs[:6])
                      + ("; ..." if len(diffs) > 6 else ""))
        return
    for name, _, _ in seeds.COMPARISONS:
        o = again.get("over_seeds_vs_" + name)
        if o:
            yield Finding(OK, where, "mean against the %s %+.2f [%+.2f, %+.2f] pp, %s at %.2f pp, remade from the "
                          "records" % (name, o["diff_pp"], o["low_pp"], o["high_pp"], o["verdict"], o["margin_pp"]))
    missing = [r["seed"] for r in again["runs"] if r["seed"] not in again["per_image_files"]]
    if missing:
        yield Finding(FLAG, where, "seeds %s have no per-image files: their counts rest on metrics.json alone, and the "
                      "mean's interval bounds the test sampling the seeds share" % ", ".join(map(str, missing)))


def check_tree(root: str) -> Iterator[Finding]:
    """Every run folder (``metrics.json`` with comparisons) and seeds folder (``seeds.json``) under ``root``."""
    runs, summaries = {}, {}
    for d, _, files in sorted(os.walk(root)):
        if "metrics.json" in files:
            with open(os.path.join(d, "metrics.json")) as f:
                m = json.load(f)
            if isinstance(m, dict) and "paired" in m:
                runs[d] = m
        if "seeds.json" in files:
            with open(os.path.join(d, "seeds.json")) as f:
                summaries[d] = json.load(f)
    # a run committed twice (seed 1 as results/NET and in results/seeds-NET) may keep its files in one place
    with_files = {(m.get("command"), m.get("model_sha256")): d for d, m in runs.items()
                  if m.get("model_sha256") and os.path.isfile(seeds.correct_path(d, seeds.AFTER))}
    for d, m in runs.items():
        yield from check_run(d, m, with_files.get((m.get("command"), m.get("model_sha256"))))
        yield from check_rate(d, m)
    for d, s in summaries.items():
        yield from check_summary(d, s)


def tally(findings: List[Finding]) -> str:
    counts = {k: sum(f.status == k for f in findings) for k in (OK, FLAG, MISMATCH)}
    return "%d checks: %d ok, %d flagged, %d mismatched" % (len(findings), counts[OK], counts[FLAG], counts[MISMATCH])
