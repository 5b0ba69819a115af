"""A rate-accuracy frontier: several budgets of one net, each over seeds, as one table and one plot.

A point is a seeds summary (``seeds.json``, ``report.seeds``) of runs that share a budget. The frontier
does not judge anything itself: each point's verdict is its summary's mean change over seeds against the
dense control (against the reference where there is no control), at the summary's margin
(docs/statistics.md). What it adds is the order, and the highest rate that is still "no loss".
"""
from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional, Sequence

from caffe_dc.algorithms import stats
from caffe_dc.base import paper
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.tables import markdown_table
from caffe_dc.report.json_out import dumps
from caffe_dc.report.seeds import seed_runs

NON_INFERIOR = (stats.GAIN, stats.NO_LOSS)   # a gain is no loss too
VERDICT_COLORS = {stats.GAIN: "tab:green", stats.NO_LOSS: "tab:green", stats.LOSS: "tab:red"}   # else orange


def _target(folder: str) -> Optional[float]:
    """The target rate the seeds' runs were given (their schedule.json's budget), or None (fixed densities)."""
    targets = set()
    for run in seed_runs(folder):
        path = os.path.join(run, "schedule.json")
        if not os.path.isfile(path):
            raise ValueError("%s has no schedule.json: cannot tell its budget" % run)
        with open(path) as f:
            budget = json.load(f).get("budget") or {}
        targets.add(budget.get("target_rate"))
    if len(targets) != 1:
        raise ValueError("the seeds of %s were run at different budgets: %s" % (folder, sorted(map(str, targets))))
    t = targets.pop()
    return None if t is None else float(t)


def point(folder: str) -> dict:
    """One budget over seeds, from its seeds.json and its runs' schedules."""
    path = os.path.join(folder, "seeds.json")
    if not os.path.isfile(path):
        raise ValueError("%s has no seeds.json (python3 tools/summarize_seeds.py %s makes it)" % (folder, folder))
    with open(path) as f:
        s = json.load(f)
    against = "control" if s.get("over_seeds_vs_control") else "reference"
    over = s.get("over_seeds_vs_" + against)
    if not over:
        raise ValueError("%s judges no comparison over seeds (fewer than two seeds?)" % path)
    err = s.get("test_error_pct", {})
    return {"folder": folder, "net": s["net"], "target_rate": _target(folder), "seeds": len(s["runs"]),
            "rate": s["compression"], "test_error_pct": {k: err[k]["mean"] for k in err},
            "against": against, "change_pp": over, "commits": s.get("commits", [])}


def summarize(folders: Sequence[str], writer: Optional[str] = None) -> dict:
    """The points by mean rate, and the highest one whose mean change over seeds is no loss."""
    points = sorted((point(f) for f in folders), key=lambda p: p["rate"]["mean"])
    nets = {p["net"] for p in points}
    if len(nets) != 1:
        raise ValueError("the folders hold different nets: %s" % ", ".join(sorted(nets)))
    net = nets.pop()
    best = [p for p in points if p["change_pp"]["verdict"] in NON_INFERIOR]
    row = paper.TABLE1.get(net)
    return {"net": net, "written_by": writer, "points": points,
            "highest_no_loss": best[-1]["folder"] if best else None,
            "paper": None if row is None else {"rate": row.rate, "test_error_pct": [100 * row.top1_ref,
                                                                                    100 * row.top1]}}


def _label(p: Mapping) -> str:
    return "preset densities" if p["target_rate"] is None else "%gx" % p["target_rate"]


def markdown(doc: Mapping) -> str:
    title = paper.TITLES.get(doc["net"], doc["net"])
    rows = []
    for p in doc["points"]:
        e, c = p["test_error_pct"], p["change_pp"]
        errors = "%.2f%% → %.2f%%" % (e["reference"], e["compressed"]) if "compressed" in e else "–"
        rows.append([_label(p), p["seeds"], "%.1fx ± %.1f" % (p["rate"]["mean"], p["rate"]["sd"]), errors,
                     "%.2f%%" % e["control"] if "control" in e else "–",
                     "%+.2f [%+.2f, %+.2f]" % (c["diff_pp"], c["low_pp"], c["high_pp"]),
                     "**%s**" % c["verdict"] if c["verdict"] in NON_INFERIOR else c["verdict"], "%.2f" % c["margin_pp"],
                     "[%s](%s)" % ("seeds", os.path.relpath(os.path.join(p["folder"], "seeds.md"),
                                                           doc.get("_base", ".")))])
    best = next((p for p in doc["points"] if p["folder"] == doc["highest_no_loss"]), None)
    lines = ["# %s: rate against accuracy over seeds" % title, ""]
    if doc["written_by"]:
        lines += ["Written by `%s` from each budget's seeds.json." % doc["written_by"], ""]
    lines += ["Each row is one budget run over seeds; the change is the mean test-accuracy change over seeds "
              "against the dense control (the reference where a run had none), in percentage points, with its 95% "
              "interval and verdict at the margin shown, as the budget's seeds.md gives them (docs/statistics.md).",
              "", markdown_table(["budget", "seeds", "rate (mean ± sd)", "test error, reference → compressed",
                                  "dense control", "change (pp)", "verdict", "margin (pp)", ""], rows), ""]
    lines.append("Highest rate with no loss over seeds: **%s, %.1fx**." % (_label(best), best["rate"]["mean"])
                 if best else "No budget here is non-inferior over seeds.")
    if doc["paper"]:
        lines += ["", "The paper (Table 1): %gx, %.2f%% → %.2f%%, one run." % (
            doc["paper"]["rate"], *doc["paper"]["test_error_pct"])]
    lines.append("")
    return "\n".join(lines)


def plot(doc: Mapping, path: str) -> str:
    """Left: the mean change over seeds with its interval, against the margin; right: the test errors."""
    from caffe_dc.report.figures import _plt, _save

    plt = _plt()
    pts = doc["points"]
    x = [p["rate"]["mean"] for p in pts]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"wspace": 0.3})
    for p, xi in zip(pts, x):
        c = p["change_pp"]
        a.errorbar([xi], [c["diff_pp"]], yerr=[[c["diff_pp"] - c["low_pp"]], [c["high_pp"] - c["diff_pp"]]],
                   xerr=[p["rate"]["sd"]], fmt="o", color=VERDICT_COLORS.get(c["verdict"], "tab:orange"), capsize=4)
        # the budget under its interval: short enough that close budgets' labels stay apart
        a.annotate(_label(p), (xi, c["low_pp"]), textcoords="offset points", xytext=(0, -4), ha="center", va="top",
                   fontsize=8)
    a.margins(x=0.1, y=0.12)
    margins = {p["change_pp"]["margin_pp"] for p in pts}
    for m in margins:
        a.axhline(-m, color="tab:red", ls="--", lw=1, label="margin -%.2f pp" % m)
    a.axhline(0, color="0.6", lw=0.8)
    a.set_xlabel("compression rate (x)")
    a.set_ylabel("accuracy change vs %s (pp)" % ("dense control" if pts[0]["against"] == "control" else "reference"))
    seeds = sorted({p["seeds"] for p in pts})
    a.set_title("mean over %s seeds, 95%% interval (green: no loss, orange: inconclusive, red: a loss)"
                % "/".join(map(str, seeds)), fontsize=9)
    a.legend(fontsize=8, loc="lower left")
    for key, style, label in (("reference", "s--", "reference"), ("control", "^:", "dense control"),
                              ("compressed", "o-", "compressed")):
        ys = [p["test_error_pct"].get(key) for p in pts]
        if all(y is not None for y in ys):
            b.plot(x, ys, style, label=label)
    if doc["paper"]:
        r, (before, after) = doc["paper"]["rate"], doc["paper"]["test_error_pct"]
        b.plot([r], [after], "*", ms=12, color="k", label="the paper (%.2f%% → %.2f%%)" % (before, after))
    b.margins(x=0.15)
    b.set_xlabel("compression rate (x)")
    b.set_ylabel("test error (%), mean over seeds")
    b.legend(fontsize=8)
    fig.suptitle(paper.TITLES.get(doc["net"], doc["net"]), fontsize=10)
    return _save(fig, path)


def write(out: str, doc: Mapping, with_plot: bool = True) -> List[str]:
    """frontier.json, frontier.md (and frontier.png) in ``out``, from ``summarize``'s document (made first, so
    that every folder is read and checked before anything is written)."""
    text = markdown(dict(doc, _base=out)).encode()
    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, "frontier.json"), os.path.join(out, "frontier.md")]
    atomic_write(written[0], dumps(doc))
    atomic_write(written[1], text)
    if with_plot:
        written.append(plot(doc, os.path.join(out, "frontier.png")))
    return written

