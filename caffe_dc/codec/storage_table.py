"""Our storage figures beside the paper's (Tables 1-5), as text and Markdown.

``storage_rows`` lines up a compressed blob's per-layer statistics
(``codec.ModelStats``) with the paper's row for the same layer; each cell
shows "ours / paper". Differences in the compress rate are marked so a
reader sees at a glance where we are better (``↓``) or worse (``↑``).
"""
from __future__ import annotations

from typing import List, Optional

from caffe_dc.base import paper
from caffe_dc.base.tables import MISSING, markdown_table, pair, pct, text_table

HEADERS = ["layer", "#weights", "W% ours / paper", "wb P+Q", "wb +H ours / paper", "ib P+Q",
           "ib +H ours / paper", "rate P+Q ours / paper", "rate P+Q+H ours / paper"]



def layer_headers(paper_net) -> List[str]:
    """The per-layer table's columns: "ours / paper" only beside the paper's own net."""
    return HEADERS if paper_net else [h.replace(" ours / paper", "") for h in HEADERS]

def _rate_pair(ours, theirs) -> str:
    s = pair(ours, theirs, lambda x: pct(x, 2))
    if ours is not None and theirs is not None:
        s += " ↓" if ours < theirs * 0.97 else (" ↑" if ours > theirs * 1.03 else " =")
    return s


def storage_rows(stats, net: Optional[str]) -> List[list]:
    rows_by_layer = {r.layer: r for r in paper.layer_rows(net)} if net in paper.LAYER_TABLES else {}
    f1 = lambda x: "%.1f" % x
    out = []
    for b in stats.quantized:
        p = rows_by_layer.get(b.name)
        out.append([b.name, b.weights,
                    pair(b.density, p.density if p else None, lambda x: pct(x, 1)),
                    "raw" if b.stored_raw else b.weight_bits, pair(b.weight_bits_h, p.wbits_h if p else None, f1),
                    "raw" if b.stored_raw else b.index_bits, pair(b.index_bits_h, p.ibits_h if p else None, f1),
                    _rate_pair(b.rate_pq, p.rate_pq if p else None),
                    _rate_pair(b.rate_pqh, p.rate_pqh if p else None)])
    t = stats.totals()
    p = paper.total_row(net) if net in paper.LAYER_TABLES else None
    out.append(["total", t["weights"],
                pair(t["density"], p.density if p else None, lambda x: pct(x, 1)),
                "%.1f" % t["weight_bits_pq"] if t["weight_bits_pq"] else "–",
                pair(t["weight_bits_h"], p.wbits_h if p else None, f1),
                "%.1f" % t["index_bits_pq"] if t["index_bits_pq"] else "–",
                pair(t["index_bits_h"], p.ibits_h if p else None, f1),
                _rate_pair(t["rate_pq"], p.rate_pq if p else None),
                _rate_pair(t["rate_pqh"], p.rate_pqh if p else None)])
    return out


def storage_text(stats, net: Optional[str]) -> str:
    return text_table(HEADERS, storage_rows(stats, net))


def storage_markdown(stats, net: Optional[str]) -> str:
    return markdown_table(HEADERS, storage_rows(stats, net))


def summary_lines(stats, net: Optional[str]) -> List[str]:
    t = stats.totals()
    orig = t["original_bits"] / 8
    x = lambda rate: MISSING if not rate else "%.1fx" % (1 / rate)   # no rate for a file of empty blobs
    lines = ["dense float32: %s; P+Q: %s (%s); P+Q+H (this file): %s (%s)" % (
        human(orig), human(t["pq_bits"] / 8), x(t["rate_pq"]), human(t["file_bytes"]), x(t["rate_pqh"]))]
    if net in paper.TABLE1:
        r = paper.TABLE1[net]
        tot = paper.total_row(net)
        lines.append("paper (%s, Table %d): %s -> %s, %dx; P+Q %s (%dx)" % (
            net, paper.TABLE_NUMBER[net], r.params_ref, r.params, r.rate, pct(tot.rate_pq, 2), tot.x_pq))
    return lines


def human(nbytes: float) -> str:
    for unit, div in (("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= div:
            return "%.2f %s" % (nbytes / div, unit)
    return "%d B" % nbytes
