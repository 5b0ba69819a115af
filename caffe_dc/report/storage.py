"""The report of ``caffe-dc storage``: AlexNet / VGG-16 storage beside the paper's Tables 1, 4 and 5.

``pipeline.storage.run_storage`` computes; this module turns its summary
into the printed lines, ``storage.md`` and ``storage.json``. Every line
names the weights' source (synthetic or a caffemodel), so a synthetic
figure can never pass for a trained net's.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional

from caffe_dc.base import paper
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.tables import markdown_table, num, pair, text_table
from caffe_dc.base import provenance
from caffe_dc.report import json_out
from caffe_dc.codec.storage_table import storage_markdown, storage_text

STREAMS = ("code_bytes", "gap_bytes", "other_bytes", "total_bytes")
BREAKDOWN_HEADERS = ["layer", "fillers per kept, ours / paper", "weight codes +H KB", "index gaps +H KB",
                     "codebook, tables KB", "layer total KB"]


def breakdown(stats, net: str, with_paper: bool = True) -> List[dict]:
    """Where each layer's bytes go -- Huffman-coded weight codes, index gaps, the rest -- ours and the paper's.

    The paper prints no byte counts, but its columns imply them for a
    layer of n weights: entries (fillers included) = (rate P+Q * 32n -
    2**wb * 32) / (wb + ib), code bits = entries * (wb +H), gap bits =
    entries * (ib +H), and the rest (codebook, tables) = rate P+Q+H * 32n
    minus both. The printed rates have 2-3 significant digits, so these
    are good to a few percent (a small negative filler count is that
    rounding). Fillers per kept weight show how clustered the kept
    positions are (fewer fillers: more structure). ``with_paper=False``
    (shrunk test nets) leaves the paper's side out.
    """
    rows = {r.layer: r for r in paper.layer_rows(net)} if with_paper else {}
    out = []
    for b in stats.quantized:
        o = {"layer": b.name, "weights": b.weights, "entries": b.entries,
             "fillers_per_kept": b.fillers / b.nonzero if b.nonzero else None,
             "code_bytes": b.code_bits / 8.0, "gap_bytes": b.gap_bits / 8.0,
             "other_bytes": (b.pqh_bits - b.code_bits - b.gap_bits) / 8.0, "total_bytes": b.pqh_bits / 8.0}
        p = rows.get(b.name)
        if p is not None:
            o["paper"] = _paper_streams(p, b.weights)
        out.append(o)
    return out


def _paper_streams(p: paper.LayerRow, n: int) -> dict:
    e = (p.rate_pq * 32 * n - (1 << int(p.wbits_pq)) * 32) / (p.wbits_pq + p.ibits_pq)
    kept = p.density * n
    total = p.rate_pqh * 32 * n / 8.0
    return {"entries": e, "fillers_per_kept": (e - kept) / kept if kept else None,
            "code_bytes": e * p.wbits_h / 8.0, "gap_bytes": e * p.ibits_h / 8.0,
            "other_bytes": total - e * (p.wbits_h + p.ibits_h) / 8.0, "total_bytes": total}


def _sum(rows: List[dict], key: str, paper_side: bool = False) -> Optional[float]:
    vals = [(r.get("paper") or {}).get(key) if paper_side else r.get(key) for r in rows]
    return None if any(v is None for v in vals) else float(sum(vals))


def _has_paper(summary: dict) -> bool:
    bd = summary["breakdown"]
    return bool(bd) and all(r.get("paper") for r in bd)


def _total_fillers_per_kept(summary: dict, paper_side: bool = False) -> Optional[float]:
    """Whole-net fillers per kept weight: all entries over all kept weights (the paper's at its W%)."""
    layers = summary["layers"]
    if paper_side:
        if not _has_paper(summary):
            return None
        return _sum(summary["breakdown"], "entries", True) / sum(l["density_target"] * l["weights"] for l in layers) - 1
    return _sum(summary["breakdown"], "entries") / max(1, sum(l["kept"] for l in layers)) - 1


def totals_rows(summary: dict) -> List[list]:
    """Whole-net figures, ours beside the paper's Table 1 / total row."""
    o, p = summary["totals"], summary["paper"]
    return [
        ["dense float32", "%.1f MB" % o["dense_mb"], "%g MB" % p["dense_mb"]],
        ["compressed (P+Q+H, the .dcz file)", "%.2f MB" % o["compressed_mb"], "%g MB" % p["compressed_mb"]],
        ["compression ratio", "%.1fx" % o["ratio"], "%gx" % p["ratio"]],
        ["after pruning only", "%.1fx (%.1f%% kept)" % (o["pruned_ratio"], 100 * o["density"]),
         "%gx (%g%% kept)" % (p["pruned_ratio"], 100 * p["density"])],
        ["after P+Q (fixed-width codes)", "%.1fx" % o["pq_ratio"], "%gx" % p["pq_ratio"]],
    ]


def _kb(v: Optional[float]) -> str:
    return num(None if v is None else v / 1e3, 0 if v is not None and abs(v) >= 1e5 else 1)


def breakdown_rows(summary: dict) -> List[list]:
    """One row per layer and a total: fillers per kept weight and KB per stream, "ours / paper"."""
    bd = summary["breakdown"]
    lines = [(r["layer"], r, r.get("paper") or {}) for r in bd]
    lines.append(("total", {k: _sum(bd, k) for k in STREAMS}, {k: _sum(bd, k, True) for k in STREAMS}))
    rows = []
    for name, o, p in lines:
        if name == "total":
            f_o, f_p = _total_fillers_per_kept(summary), _total_fillers_per_kept(summary, True)
        else:
            f_o, f_p = o["fillers_per_kept"], p.get("fillers_per_kept")
        rows.append([name, pair(f_o, f_p, lambda v: num(v, 2), always=True)]
                    + [pair(o[k], p.get(k), _kb, always=True) for k in STREAMS])
    return rows


def gap_sentence(summary: dict) -> Optional[str]:
    """One line: how much larger or smaller our layers are than the paper's, by stream."""
    if not _has_paper(summary):
        return None
    bd = summary["breakdown"]
    d = {k: (_sum(bd, k) - _sum(bd, k, True)) / 1e6 for k in STREAMS}
    return ("Compressed layers, ours minus the paper's (%s): %+.2f MB = weight codes %+.2f MB + index gaps %+.2f MB "
            "(%.2f vs %.2f fillers per kept weight) + codebooks and tables %+.2f MB."
            % (summary["weights"], d["total_bytes"], d["code_bytes"], d["gap_bytes"],
               _total_fillers_per_kept(summary), _total_fillers_per_kept(summary, True), d["other_bytes"]))


def stage_rows(summary: dict) -> List[list]:
    s = summary["seconds"]
    return [[k, "%.2f" % s[k]] for k in ("prune", "quantize", "encode", "decode", "verify", "total")]


def layer_rows(summary: dict) -> List[list]:
    return [[r["name"], "x".join(map(str, r["shape"])), r["kept"],
             "%.2f%% / %g%%" % (100 * r["density"], 100 * r["density_target"]), r["bits"],
             r["distinct"], "%.2f" % r["prune_s"], "%.2f" % r["quantize_s"]] for r in summary["layers"]]


def text_report(result) -> str:
    """The Table 4/5 comparison and the totals, every line tagged with the weights' source."""
    s = result.summary
    w = s["weights"]
    parts = ["Table %d, ours / paper (%s):" % (s["paper"]["table"], w), storage_text(result.stats, s["net"]), "",
             "totals (%s; MB = 10^6 bytes, as the paper):" % w,
             text_table(["", "ours", "paper"], totals_rows(s)), "",
             "where the bytes go, ours / paper (implied by its columns), %s:" % w,
             text_table(BREAKDOWN_HEADERS, breakdown_rows(s)[-1:])]
    gap = gap_sentence(s)
    if gap:
        parts.append(gap)
    parts += ["", "seconds (%s): %s; peak RSS %.0f MB"
              % (w, ", ".join("%s %s" % tuple(r) for r in stage_rows(s)), s["peak_rss_mb"])]
    tag = "[%s | %s]" % (s["net"], w)
    return "\n".join("%s %s" % (tag, line) if line else tag for line in "\n".join(parts).split("\n"))


def _md_intro(s: dict, title: str, command: Optional[str]) -> List[str]:
    if s["synthetic"]:
        out = ["**These figures are for synthetic weights**, not for a trained %s: %s (seed %d). "
               "See `caffe_dc/pipeline/storage.py` for why this distribution and what it can show: the pipeline "
               "(pruning to the paper's W%%, k-means with the paper's bits, the `.dcz` encoder with the paper's "
               "index bits) is the real one; the Huffman gains depend on the weights' distribution and on the "
               "structure of a trained net, which i.i.d. weights lack." % (title, s["distribution"], s["seed"]), ""]
    else:
        out = ["Weights: `%s` (pruned and quantized post hoc, no retraining)." % s["weights_file"], ""]
    if s["shrink"] > 1:
        out += ["Channel counts divided by %d (a test run): sizes are not comparable to the paper's." % s["shrink"], ""]
    if command:
        out += ["Command: `%s`" % command, ""]
    return out


def markdown_report(result, command: Optional[str] = None) -> str:
    s = result.summary
    net, label = s["net"], s["weights"]
    title = paper.TITLES[net]
    out = ["# %s storage at the paper's settings (%s)" % (title, label), ""] + _md_intro(s, title, command)

    out += ["## Totals (%s)" % label, "", markdown_table(["", "ours", "paper"], totals_rows(s)), "",
            "MB are 10^6 bytes, as the paper counts (%s's dense float32 parameters are %.1f MB: its \"%g MB\"). "
            "Ours includes everything in the file: biases (raw float32), headers, CRCs, Huffman tables."
            % (title, s["totals"]["dense_mb"], s["paper"]["dense_mb"]), ""]
    gap = gap_sentence(s)
    if gap:
        out += [gap, ""]

    out += ["## Per layer, ours / paper Table %d (%s)" % (s["paper"]["table"], label), "",
            storage_markdown(result.stats, net), ""]

    out += ["## Where the bytes go (%s)" % label, "",
            "Ours is measured; the paper's is implied by its columns (see `report.storage.breakdown`): entries = "
            "(rate P+Q x 32n - codebook) / (wb + ib), stream bits = entries x bits +H. Fillers per kept weight "
            "measure how clustered the kept positions are; weight-code bits how skewed the codebook usage is. "
            "The paper prints rates to 2-3 digits, so its implied bytes are good to a few percent; a negative "
            "value on its side is that rounding.", "",
            markdown_table(BREAKDOWN_HEADERS, breakdown_rows(s)), ""]

    rss = s["rss_mb_by_stage"]
    out += ["## Run (%s)" % label, "", markdown_table(["stage", "seconds"], stage_rows(s)), "",
            "Peak RSS: %.0f MB (after quantize %.0f, after encode %.0f, after decode %.0f). k-means fit: %s. "
            "Decoded weights verified bit-exact against the quantized ones (%d values)."
            % (s["peak_rss_mb"], rss["after_quantize"], rss["after_encode"], rss["after_decode"],
               s["kmeans_fit"], s["verified_values"]), "",
            markdown_table(["layer", "shape", "kept", "W% ours / paper", "bits", "distinct values", "prune s",
                            "quantize s"], layer_rows(s)),
            ""]
    return "\n".join(out)


def write_outputs(result, out_dir: str, json_path: Optional[str] = None,
                  command: Optional[str] = None) -> Dict[str, str]:
    """``storage.json``, ``storage.md`` and ``<net>.dcz`` into ``out_dir`` (atomically); and ``json_path``."""
    net = result.summary["net"]
    paths = {"json": os.path.join(out_dir, "storage.json"), "markdown": os.path.join(out_dir, "storage.md"),
             "blob": os.path.join(out_dir, "%s.dcz" % net)}
    env = provenance.environment()
    text = json_out.dumps(dict(result.summary, command=command, files=paths, environment=env,
                               sha256=hashlib.sha256(result.blob).hexdigest()))
    atomic_write(paths["json"], text)
    md = markdown_report(result, command).rstrip("\n") + "\n\nMade at commit %s%s; `%s.dcz` sha256 %s.\n" % (
        env.get("git_commit") or "unknown", " (uncommitted changes)" if env.get("git_dirty") else "", net,
        hashlib.sha256(result.blob).hexdigest())
    atomic_write(paths["markdown"], md.encode())
    atomic_write(paths["blob"], result.blob)
    if json_path:
        atomic_write(json_path, text)
        paths["json_copy"] = json_path
    return paths
