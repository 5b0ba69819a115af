"""The spread over seeds: one summary of N runs of the same command with seeds s, s+1, ...

One seed's accuracy change rests on a few hundred discordant test images,
and its rate on one training's weights; the spread over seeds shows how
much of either is the luck of one run. The summary gives, for each seed,
its rate, its file's sha256 and its paired changes against the reference
and the dense control, each with its interval and verdict at its margin
(``algorithms.stats``, docs/statistics.md), recomputed from the counts its
record holds; then, over the seeds, the mean of each change with an
interval carrying both the seed-to-seed spread and the test sampling
(``stats.over_seeds``), judged by the same rule at one margin, and the mean
± sd of the rate.

It reads nothing but the seeds' ``metrics.json`` records and, where a run
folder has them, its per-image files (``test/NAME_correct.npy``), so it can be
written again from committed results without touching Caffe; each run's
commit, BLAS kernel and command come from its own record, not from whoever
writes the summary.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from caffe_dc.algorithms import stats
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.tables import markdown_table
from caffe_dc.report.json_out import dumps

# (name, key in metrics.json's "paired", the per-image file of the model before); after is always "decode"
COMPARISONS = (("reference", "reference->compressed", "reference"), ("control", "control->compressed", "control"))
AFTER = "decode"


def correct_path(run: str, model: str) -> str:
    """Where a run folder keeps one model's per-image correctness on the test split."""
    return os.path.join(run, "test", "%s_correct.npy" % model)


def load_correct(run: str, model: str, n: int) -> Optional[np.ndarray]:
    """One model's per-image correctness from a run folder, or None when the file is not there."""
    path = correct_path(run, model)
    if not os.path.isfile(path):
        return None
    try:
        return stats.unpack_correct(np.load(path, allow_pickle=False), n)
    except ValueError as e:
        raise ValueError("%s: %s" % (path, e))


def recorded_margin(m: Mapping) -> float:
    """The margin a run judged at (a fraction); a record made before margins existed gets the default
    rule on its reference's validation accuracy, which it does record."""
    for _, key, _ in COMPARISONS:
        if "margin" in m.get("paired", {}).get(key, {}):
            return float(m["paired"][key]["margin"])
    return stats.default_margin(m["stages"]["reference"]["accuracy"])


def _change(cmp: Mapping) -> dict:
    return {"diff_pp": 100 * cmp["diff"], "low_pp": 100 * cmp["diff_low"], "high_pp": 100 * cmp["diff_high"],
            "margin_pp": 100 * cmp["margin"], "mcnemar_p": cmp["mcnemar_p"], "only_before": cmp["only_a"],
            "only_after": cmp["only_b"], "n": cmp["n"], "verdict": cmp["verdict"]}


def seed_row(m: Mapping, run: str, margin: Optional[float] = None) -> dict:
    """One seed's line of the summary, from its run's ``metrics.json`` record, judged at ``margin`` (a
    fraction; default: the run's own) from the counts the record holds."""
    env = m.get("environment", {})
    own = "margin" in m["paired"].get(COMPARISONS[0][1], {})
    row = {"seed": m["seed"], "run": run, "command": m.get("command"), "rate": m["compression"],
           "file_bytes": m["file_bytes"], "model_sha256": m.get("model_sha256"), "commit": env.get("git_commit"),
           "blas_kernel": env.get("blas_kernel"), "test_correct": m["final_test"]["correct"],
           "test_n": m["final_test"]["n"], "recorded_rule": "margin" if own else "before margins"}
    # test error of each model, from the counts the record holds (the compressed one's, plus the changes)
    right, n = m["final_test"]["correct"], m["final_test"]["n"]
    errors = {"compressed": 100.0 * (n - right) / n}
    at = recorded_margin(m) if margin is None else margin
    for name, key, _ in COMPARISONS:
        if key in m["paired"]:
            c = m["paired"][key]
            row["vs_" + name] = _change(stats.compare(c["only_a"], c["only_b"], c["n"], margin=at))
            errors[name] = 100.0 * (n - (right - c["only_b"] + c["only_a"])) / n
    row["test_error_pct"] = errors
    return row


def _per_image(runs: Sequence[str], rows: Sequence[Mapping], name: str, before: str) -> Optional[Dict[str, np.ndarray]]:
    """``over_seeds``'s per-image sums when every seed's run folder has both files, else None. Each file's
    counts must be the ones its record holds."""
    pairs = []
    for run, row in zip(runs, rows):
        n = row["test_n"]
        x, y = load_correct(run, before, n), load_correct(run, AFTER, n)
        if x is None or y is None:
            return None
        ch = row["vs_" + name]
        if stats.counts_of(x, y) != (ch["only_before"], ch["only_after"], ch["n"]):
            raise ValueError("%s: the per-image files of %s and %s give %s, but metrics.json records %s"
                             % (run, before, AFTER, stats.counts_of(x, y),
                                (ch["only_before"], ch["only_after"], ch["n"])))
        pairs.append((x, y))
    return stats.per_image_sums([p[0] for p in pairs], [p[1] for p in pairs])


def _spread(values: Sequence[float]) -> dict:
    mean, sd = stats.mean_sd(values)
    return {"mean": mean, "sd": sd, "values": list(values)}


def summarize(records: Sequence[Mapping], runs: Sequence[str], command: str, net: str,
              margin: Optional[float] = None, writer: Optional[str] = None) -> dict:
    """The summary of the seeds' records (``runs``: where each was made, same order). ``margin`` (a
    fraction) judges every seed and the mean; without it each seed keeps its own margin and the mean is
    judged at the smallest of them (the strictest). ``writer``: the command writing this summary."""
    if not records:
        raise ValueError("no seeds to summarize")
    rows = [seed_row(m, run, margin) for m, run in zip(records, runs)]
    out = {"net": net, "command": command, "written_by": writer, "margin_given_pp": None if margin is None
           else 100 * margin, "seeds": [r["seed"] for r in rows], "runs": rows,
           "commits": sorted({r["commit"] for r in rows if r["commit"]}),
           "blas_kernels": sorted({r["blas_kernel"] for r in rows if r["blas_kernel"]}),
           "compression": _spread([r["rate"] for r in rows]),
           "test_error_pct": {k: _spread([r["test_error_pct"][k] for r in rows])
                              for k in ("reference", "control", "compressed")
                              if all(k in r["test_error_pct"] for r in rows)}}
    if len({r["test_n"] for r in rows}) != 1:
        raise ValueError("the seeds were tested on different numbers of images: %s"
                         % sorted({r["test_n"] for r in rows}))
    n = rows[0]["test_n"]
    for name, _, before in COMPARISONS:
        changes = [r["vs_" + name] for r in rows if "vs_" + name in r]
        if len(changes) != len(rows):   # a spread over some seeds only would read as one over all
            continue
        out["change_vs_%s_pp" % name] = _spread([c["diff_pp"] for c in changes])
        out["no_loss_vs_%s" % name] = sum(c["verdict"] in (stats.GAIN, stats.NO_LOSS) for c in changes)
        if len(rows) < 2:
            continue
        at = margin if margin is not None else min(c["margin_pp"] for c in changes) / 100
        sums = _per_image(runs, rows, name, before) or {
            "sums": [c["only_after"] - c["only_before"] for c in changes],
            "squares": [c["only_after"] + c["only_before"] for c in changes]}
        o = stats.over_seeds(n, **sums)
        mean = {"diff": float(o["diff"]), "diff_low": float(o["diff_low"]), "diff_high": float(o["diff_high"]),
                "margin": at}
        out["over_seeds_vs_%s" % name] = {
            "diff_pp": 100 * mean["diff"], "low_pp": 100 * mean["diff_low"], "high_pp": 100 * mean["diff_high"],
            "margin_pp": 100 * at, "verdict": stats.verdict(mean), "se_pp": 100 * float(o["se"]), "df": o["df"],
            "shared_test_sampling": o["shared_test_sampling"]}
    out["per_image_files"] = [r["seed"] for r, run in zip(rows, runs)
                              if all(os.path.isfile(correct_path(run, m)) for m in ("reference", AFTER))]
    return out


def _interval(c: Optional[Mapping]) -> str:
    if c is None:
        return "–"
    return "%+.2f [%+.2f, %+.2f], %s (margin %.2f)" % (c["diff_pp"], c["low_pp"], c["high_pp"], c["verdict"],
                                                        c["margin_pp"])


def _made_by(s: Mapping) -> str:
    commands = [r["command"] for r in s["runs"]]
    if len(set(commands)) == 1:
        return "Made by `%s`" % commands[0]
    return "Made by %d separate runs: %s" % (len(commands), "; ".join(
        "seed %s by `%s`" % (r["seed"], r["command"]) for r in s["runs"]))


def markdown(s: Mapping) -> str:
    """seeds.md: the provenance, the table of seeds, then the mean over seeds with its interval and verdict."""
    n = len(s["runs"])
    rows = [[r["seed"], "%.1fx" % r["rate"], "{:,}".format(r["file_bytes"]), _interval(r.get("vs_reference")),
             _interval(r.get("vs_control")), "yes" if r["seed"] in s["per_image_files"] else "**no**",
             "`%s…`" % r["model_sha256"][:12] if r["model_sha256"] else "–"]
            for r in s["runs"]]
    written = ("Written by `%s` from the seeds' records." % s["written_by"] if s["written_by"]
               else "Written by that command when its runs ended.")
    old = [r["seed"] for r in s["runs"] if r["recorded_rule"] != "margin"]
    lines = ["# %s over %d seeds" % (s["net"], n), "",
             "%s; each seed's run records its own commit (%s) and BLAS kernel (%s). %s"
             % (_made_by(s), ", ".join(c[:12] for c in s["commits"]) or "unknown",
                ", ".join(s["blas_kernels"]) or "unknown", written), "",
             "Changes are test accuracy, compressed minus reference or dense control, in percentage points, with "
             "Tango's 95%% score interval and the verdict at the margin shown (docs/statistics.md: \"no loss\" only "
             "when the interval's lower bound lies above minus the margin), recomputed from the counts each "
             "run's metrics.json records%s." % (
                 " at the margin given to this summary (%.2f pp)" % s["margin_given_pp"]
                 if s["margin_given_pp"] is not None else ", each at its run's margin"), ""]
    if old:
        lines += ["**Re-judged.** The records of seed%s %s were made before non-inferiority margins: their own "
                  "report.md and metrics.json give the earlier rule (a Clopper–Pearson interval conditional on the "
                  "discordant count, \"no loss\" whenever it reached 0). Here they are judged by the current rule, "
                  "at the default margin of their references' validation accuracy."
                  % ("s" if len(old) > 1 else "", ", ".join(map(str, old))), ""]
    lines += [markdown_table(["seed", "rate", "bytes", "Δ vs reference (pp)", "Δ vs dense control (pp)",
                              "per-image files", "model.dcz sha256"], rows), ""]
    missing = [r["seed"] for r in s["runs"] if r["seed"] not in s["per_image_files"]]
    lines += ["Over the %d seeds:" % n, "", "- rate: %.1fx ± %.1f (mean ± sd)" % (s["compression"]["mean"],
                                                                              s["compression"]["sd"])]
    err = s.get("test_error_pct", {})
    if err:
        lines += ["- test error (mean ± sd): " + ", ".join(
            "%s %.2f%% ± %.2f" % (label, err[k]["mean"], err[k]["sd"])
            for k, label in (("reference", "reference"), ("control", "dense control"), ("compressed", "compressed"))
            if k in err)]
    for name, label in (("reference", "the reference"), ("control", "the dense control")):
        o = s.get("over_seeds_vs_" + name)
        if "change_vs_%s_pp" % name not in s:
            continue
        sp = s["change_vs_%s_pp" % name]
        lines.append("- change against %s: %s; sd over seeds %.2f pp; no loss in %d of %d seeds at their margins"
                     % (label, "mean %+.2f pp [%+.2f, %+.2f], %s at a margin of %.2f pp"
                        % (o["diff_pp"], o["low_pp"], o["high_pp"], o["verdict"], o["margin_pp"]) if o
                        else "%+.2f pp" % sp["mean"], sp["sd"], s["no_loss_vs_" + name], n))
    if any(("over_seeds_vs_" + name) in s for name, _, _ in COMPARISONS):
        lines += ["", "The interval of the mean (docs/statistics.md, over seeds) is Student's t with %d degrees of "
                  "freedom on the spread of the per-seed changes plus the test sampling the seeds share, since "
                  "they read the same images; %s" % (n - 1, "that shared part comes from every seed's per-image "
                                                      "files." if not missing else
                                                      "per-image files are missing for seed%s %s, so that shared "
                                                      "part is bounded from the counts alone (conservative: a "
                                                      "wider interval)." % ("s" if len(missing) > 1 else "",
                                                                            ", ".join(map(str, missing))))]
    lines.append("")
    return "\n".join(lines)


def seed_runs(folder: str) -> List[str]:
    """The seed-N run folders (each with a metrics.json) of a seeds folder, by seed."""
    found = {}
    for p in glob.glob(os.path.join(folder, "seed-*", "metrics.json")):
        m = re.fullmatch(r"seed-(\d+)", os.path.basename(os.path.dirname(p)))
        if m:
            found[int(m.group(1))] = os.path.dirname(p)
    return [found[k] for k in sorted(found)]


def records_of(paths: Sequence[str]) -> List[Dict]:
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def write(folder: str, records: Sequence[Mapping], runs: Sequence[str], command: str, net: str,
          margin: Optional[float] = None, writer: Optional[str] = None) -> str:
    """seeds.json and seeds.md in ``folder``; the path of seeds.md."""
    summary = summarize(records, runs, command, net, margin, writer)
    text = markdown(summary).encode()
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, "seeds.json"), dumps(summary))
    path = os.path.join(folder, "seeds.md")
    atomic_write(path, text)
    return path
