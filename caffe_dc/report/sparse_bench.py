"""The report of ``caffe-dc bench-sparse``: our dense and CSR timings beside the paper's Table 8 (CPU rows)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.tables import markdown_table, num, text_table
from caffe_dc.report import json_out
from caffe_dc.report.figures import speedups

HEADERS = ["net", "layer", "shape", "W%", "batch", "dense µs", "sparse µs", "speedup",
           "paper dense µs", "paper sparse µs", "paper speedup"]


def blas_summary(info: dict) -> str:
    """The BLAS that ran, from ``pipeline.sparse_bench.blas_threads``' description."""
    libs = info.get("libraries") or []
    if libs:
        return ", ".join("%s %s, threads=%s" % (l["internal_api"], l["version"], l["num_threads"]) for l in libs)
    return "numpy's %s (threads not controlled)" % info.get("numpy_build_blas")


def table_rows(result: dict) -> List[list]:
    out = []
    for r in result["rows"]:
        p = r["paper"] or {}
        out.append([r["net"], r["layer"], "x".join(map(str, r["shape"])), "%.1f%%" % (100 * r["density"]),
                    r["batch"], num(r["dense_us"]), num(r["sparse_us"]), num(r["speedup"], 2),
                    num(p.get("dense_us")), num(p.get("sparse_us")), num(p.get("speedup"), 2)])
    for b in result["batches"]:
        g, pg = result["geomean_speedup"].get(str(b)), result["paper_geomean_speedup"].get(str(b))
        out.append(["geomean", "", "", "", b, "", "", num(g, 2), "", "", num(pg, 2)])
    return out


def text_report(result: dict) -> str:
    head = "dense (numpy BLAS) vs CSR (scipy), µs per sample; ours: %s, %s; paper Table 8: %s" % (
        blas_summary(result["blas"]), result["environment"]["cpu"], result["paper_platform"])
    return "\n".join([head, "weights: " + "; ".join(result["sources"]), text_table(HEADERS, table_rows(result))])


def markdown_report(result: dict, command: Optional[str] = None, plot: Optional[str] = None) -> str:
    env, blas = result["environment"], result["blas"]
    lines = ["# Dense vs sparse fully connected layers (paper Table 8, CPU rows)", "",
             "Weights: %s. Each layer is the pruned (decoded) weight matrix; dense is numpy's BLAS `W @ x`, "
             "sparse is `scipy.sparse.csr_matrix(W) @ x`, both float32; µs per sample, the median of repeated "
             "runs after warm-up. Speedup = dense / sparse." % "; ".join(result["sources"]), ""]
    if command:
        lines += ["Command: `%s`" % command, ""]
    lines += ["Ours: %s; %d CPUs visible (load average %s at the end); BLAS %s; numpy %s, scipy %s "
              "(CSR products are single-threaded). Paper: %s." % (
                  env["cpu"], env["cpus"], env.get("loadavg_1_5_15min"), blas_summary(blas), env["numpy"],
                  env["scipy"], result["paper_platform"]), ""]
    if not blas.get("libraries"):
        lines += ["Note: %s" % blas.get("note", "BLAS threads not controlled"), ""]
    lines += [markdown_table(HEADERS, table_rows(result)), ""]
    if plot:
        lines += ["![speedups](%s)" % os.path.basename(plot), ""]
    return "\n".join(lines)


def plot_speedups(result: dict, path: str) -> str:
    """Ours vs the paper's dense/sparse speedup per layer, one panel per batch size (PNG)."""
    panels = []
    for b in result["batches"]:
        rows = [r for r in result["rows"] if r["batch"] == b]
        panels.append(("batch %d" % b, [(r["net"], r["layer"]) for r in rows], [r["speedup"] for r in rows],
                       [r["paper"]["speedup"] if r["paper"] else None for r in rows]))
    return speedups(panels, path, "ours (%s)" % blas_summary(result["blas"]), "paper (%s)" % result["paper_platform"],
                    "Pruned fc layers, dense vs CSR (%s)" % "; ".join(result["sources"])[:120])


def write_outputs(result: dict, out_dir: str, command: Optional[str] = None) -> Dict[str, str]:
    """``bench_sparse.json``, ``bench_sparse.md`` and ``bench_sparse.png`` into ``out_dir`` (atomically)."""
    paths = {"json": os.path.join(out_dir, "bench_sparse.json"), "markdown": os.path.join(out_dir, "bench_sparse.md"),
             "plot": os.path.join(out_dir, "bench_sparse.png")}
    plot_speedups(result, paths["plot"])
    atomic_write(paths["json"], json_out.dumps(dict(result, command=command, files=paths)))
    atomic_write(paths["markdown"], markdown_report(result, command, paths["plot"]).encode())
    return paths
