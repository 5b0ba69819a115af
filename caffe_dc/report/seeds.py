"""The spread over seeds: one summary of N runs of the same command with seeds s, s+1, ...

One seed's accuracy change rests on a few hundred discordant test images,
and its rate on one training's weights; the spread over seeds shows how
much of either is the luck of one run. The summary gives, for each seed,
its rate, its file's sha256 and its paired changes against the reference
and the dense control, each with its exact interval and verdict
(``algorithms.stats``, the one rule); then the mean ± sd over seeds of the
rate and of both changes, and in how many seeds "no loss" holds.

It reads nothing but the seeds' ``metrics.json`` records, so it can be
written again from committed results without touching Caffe; each run's
commit and BLAS kernel come from its own record, not from whoever writes
the summary.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence

from caffe_dc.algorithms import stats
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.tables import markdown_table
from caffe_dc.report.json_out import dumps

COMPARISONS = (("reference", "reference->compressed"), ("control", "control->compressed"))


def _change(cmp: Mapping) -> dict:
    return {"diff_pp": 100 * cmp["diff"], "low_pp": 100 * cmp["diff_low"], "high_pp": 100 * cmp["diff_high"],
            "mcnemar_p": cmp["mcnemar_p"], "only_before": cmp["only_a"], "only_after": cmp["only_b"],
            "n": cmp["n"], "verdict": stats.verdict(cmp)}


def seed_row(m: Mapping, run: str) -> dict:
    """One seed's line of the summary, from its run's ``metrics.json`` record."""
    env = m.get("environment", {})
    row = {"seed": m["seed"], "run": run, "rate": m["compression"], "file_bytes": m["file_bytes"],
           "model_sha256": m.get("model_sha256"), "commit": env.get("git_commit"),
           "blas_kernel": env.get("blas_kernel"), "test_correct": m["final_test"]["correct"],
           "test_n": m["final_test"]["n"]}
    for name, key in COMPARISONS:
        if key in m.get("paired", {}):
            row["vs_" + name] = _change(m["paired"][key])
    return row


def _spread(values: Sequence[float]) -> dict:
    mean, sd = stats.mean_sd(values)
    return {"mean": mean, "sd": sd, "values": list(values)}


def summarize(records: Sequence[Mapping], runs: Sequence[str], command: str, net: str) -> dict:
    """The summary of the seeds' records (``runs``: where each was made, same order)."""
    if not records:
        raise ValueError("no seeds to summarize")
    rows = [seed_row(m, run) for m, run in zip(records, runs)]
    out = {"net": net, "command": command, "seeds": [r["seed"] for r in rows], "runs": rows,
           "commits": sorted({r["commit"] for r in rows if r["commit"]}),
           "blas_kernels": sorted({r["blas_kernel"] for r in rows if r["blas_kernel"]}),
           "compression": _spread([r["rate"] for r in rows])}
    for name, _ in COMPARISONS:
        changes = [r["vs_" + name] for r in rows if "vs_" + name in r]
        if len(changes) == len(rows):   # a spread over some seeds only would read as one over all
            out["change_vs_%s_pp" % name] = _spread([c["diff_pp"] for c in changes])
            out["no_loss_vs_%s" % name] = sum(c["verdict"] != stats.LOSS for c in changes)
    return out


def _interval(c: Optional[Mapping]) -> str:
    if c is None:
        return "–"
    return "%+.2f [%+.2f, %+.2f], %s" % (c["diff_pp"], c["low_pp"], c["high_pp"], c["verdict"])


def markdown(s: Mapping) -> str:
    n = len(s["runs"])
    rows = [[r["seed"], "%.1fx" % r["rate"], "{:,}".format(r["file_bytes"]), _interval(r.get("vs_reference")),
             _interval(r.get("vs_control")), "`%s…`" % r["model_sha256"][:12] if r["model_sha256"] else "–"]
            for r in s["runs"]]
    lines = ["# %s over %d seeds" % (s["net"], n), "",
             "Made by `%s`; each seed's run records its own commit (%s) and BLAS kernel (%s)."
             % (s["command"], ", ".join(c[:12] for c in s["commits"]) or "unknown",
                ", ".join(s["blas_kernels"]) or "unknown"), "",
             "Changes are test accuracy, compressed minus reference or dense control, in percentage points, with "
             "the exact paired 95% interval and the verdict of the one rule (docs/statistics.md).", "",
             markdown_table(["seed", "rate", "bytes", "Δ vs reference (pp)", "Δ vs dense control (pp)",
                             "model.dcz sha256"], rows), "",
             "Mean ± sd over the %d seeds:" % n, "",
             "- rate: %.1fx ± %.1f" % (s["compression"]["mean"], s["compression"]["sd"])]
    for name, label in (("reference", "the reference"), ("control", "the dense control")):
        key = "change_vs_%s_pp" % name
        if key in s:
            lines.append("- change against %s: %+.2f ± %.2f pp; no loss in %d of %d seeds"
                         % (label, s[key]["mean"], s[key]["sd"], s["no_loss_vs_" + name], n))
    lines.append("")
    return "\n".join(lines)


def records_of(paths: Sequence[str]) -> List[Dict]:
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def write(folder: str, records: Sequence[Mapping], runs: Sequence[str], command: str, net: str) -> str:
    """seeds.json and seeds.md in ``folder``; the path of seeds.md."""
    summary = summarize(records, runs, command, net)
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, "seeds.json"), dumps(summary))
    path = os.path.join(folder, "seeds.md")
    atomic_write(path, markdown(summary).encode())
    return path
