"""Dense against sparse fully connected layers: the paper's Table 8 (CPU rows) on this machine.

*Deep Compression*, Appendix A: the pruned fc layers of AlexNet and VGG-16
timed as dense matrix products (MKL ``sgemv``/``sgemm``) and as CSR sparse
products (MKL ``csrmv``/``csrmm``), in microseconds per sample, at batch 1
(matrix-vector: the latency case, where sparse wins because the product is
memory bound and CSR reads ~10x fewer bytes) and batch 64 (matrix-matrix:
dense BLAS is compute bound and far better tuned, so sparse mostly loses).

Ours: numpy's BLAS ``W @ x`` against ``scipy.sparse.csr_matrix(W) @ x``,
float32 both, on the layers decoded from a ``.dcz`` blob (pruned and
quantized; the paper timed the pruned model, and the values do not matter
to the timing, only the sparsity pattern and the sizes). Each case is
warmed up, then timed repeatedly; the median is reported. scipy's CSR
product is single-threaded, so by default BLAS gets one thread too
(``threads``): like for like, and gentle on a shared machine. The BLAS that
actually ran and its thread count are recorded (``threadpoolctl``).

This is a benchmark, not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.base import paper
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.errors import InputError

FC_LAYERS = ("fc6", "fc7", "fc8")
BATCHES = (1, 64)
DEFAULT_THREADS = 1
DEFAULT_FIT_SAMPLE = 1 << 18

# Table 8, Core i7-5930K, MKL: microseconds per sample, pruned model
# (copied from docs' reference, /work/shared/reference/paper_tables.md):
# (dense b=1, sparse b=1, dense b=64, sparse b=64).
PAPER_TABLE8_CPU: Dict[Tuple[str, str], Tuple[float, float, float, float]] = {
    (paper.ALEXNET, "fc6"): (7516.2, 3066.5, 318.4, 1417.6),
    (paper.ALEXNET, "fc7"): (6187.1, 1282.1, 188.9, 682.1),
    (paper.ALEXNET, "fc8"): (1134.9, 890.5, 45.8, 407.7),
    (paper.VGG16, "fc6"): (35022.8, 3774.3, 1056.0, 1780.3),
    (paper.VGG16, "fc7"): (5372.8, 545.1, 188.3, 274.9),
    (paper.VGG16, "fc8"): (774.2, 777.3, 45.7, 363.1),
}
PAPER_CPU = "Core i7-5930K, MKL"


def paper_row(net: str, layer: str, batch: int) -> Optional[dict]:
    """The paper's dense / sparse µs per sample and their ratio for one case (None if not in Table 8)."""
    r = PAPER_TABLE8_CPU.get((net, layer))
    if r is None or batch not in BATCHES:
        return None
    d, s = (r[0], r[1]) if batch == 1 else (r[2], r[3])
    return {"dense_us": d, "sparse_us": s, "speedup": d / s}


class Case(NamedTuple):
    """One fc layer to time: its pruned (decoded) weights as a dense (out, in) float32 matrix."""
    net: str
    layer: str
    weights: np.ndarray
    source: str               # e.g. "synthetic weights" or "weights from X.caffemodel"


# ============================================================================ layers

def fc_cases(params, net: str, source: str, names: Optional[Sequence[str]] = None) -> List[Case]:
    """InnerProduct layers of a decoded model (``fc6``-``fc8`` if present, else all of them)."""
    ips = [n for n, lp in params.items() if lp.type == "InnerProduct"]
    pick = [n for n in (names or FC_LAYERS) if n in ips] or ips
    if not pick:
        raise InputError("no fully connected (InnerProduct) layers to benchmark")
    out = []
    for n in pick:
        w = params[n].blobs[0]
        out.append(Case(net, n, np.ascontiguousarray(w.reshape(w.shape[0], -1), dtype=np.float32), source))
    return out


def cases_from_blob(path: str) -> List[Case]:
    """The fc layers of a ``.dcz`` blob, e.g. one written by ``caffe-dc storage``."""
    from caffe_dc.stages import encode as encoding

    params, _, meta = encoding.decode_bytes(encoding.read_blob(path))
    m = meta.get("meta") or {}
    net = m.get("paper_net") or encoding.guess_net(params) or meta.get("net") or "unknown"
    source = "%s (%s)" % (m["weights"], os.path.basename(path)) if m.get("weights") else os.path.basename(path)
    return fc_cases(params, net, source)


def cases_synthetic(net: str, seed: int = 0, fit_sample: Optional[int] = DEFAULT_FIT_SAMPLE, shrink: int = 1,
                    log: Callable[[str], None] = print) -> List[Case]:
    """fc6-fc8 of ``net`` with synthetic weights, through the storage path (prune, quantize, encode, decode).

    The k-means fit is sampled by default: timings depend on the sparsity
    pattern and sizes only, not on the values.
    """
    from caffe_dc.pipeline import storage

    r = storage.run_storage(net, seed=seed, shrink=shrink, fit_sample=fit_sample, only=FC_LAYERS, log=log)
    return fc_cases(r.decoded, r.summary["net"], r.summary["weights"])


# ============================================================================ timing

def _median_time(fn: Callable[[], object], warmup: int, min_repeats: int, min_seconds: float,
                 max_repeats: int) -> Tuple[float, int]:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    spent = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or spent < min_seconds):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return statistics.median(times), len(times)


def bench_case(case: Case, batch: int, rng: np.random.Generator, warmup: int = 2, min_repeats: int = 5,
               min_seconds: float = 0.25, max_repeats: int = 200) -> dict:
    """Time ``W @ x`` dense and CSR at one batch size; check the two products agree."""
    from scipy import sparse

    W = case.weights
    A = sparse.csr_matrix(W)
    # Post-ReLU activations are >= 0; the values do not affect either product's speed.
    x = rng.random(W.shape[1], dtype=np.float32) if batch == 1 else \
        rng.random((W.shape[1], batch), dtype=np.float32)
    yd = W @ x
    ys = A @ x
    if ys.dtype != np.float32:
        raise RuntimeError("scipy's CSR product returned %s, not float32: the timing would not compare" % ys.dtype)
    scale = float(np.abs(yd).max()) or 1.0
    err = float(np.abs(yd - ys).max()) / scale
    td, nd = _median_time(lambda: W @ x, warmup, min_repeats, min_seconds, max_repeats)
    ts, ns = _median_time(lambda: A @ x, warmup, min_repeats, min_seconds, max_repeats)
    row = {
        "net": case.net, "layer": case.layer, "source": case.source, "shape": list(W.shape),
        "nnz": int(A.nnz), "density": A.nnz / W.size, "batch": int(batch),
        "dense_us": 1e6 * td / batch, "sparse_us": 1e6 * ts / batch, "speedup": td / ts,
        "repeats": [nd, ns], "max_rel_diff": err, "agree": bool(np.allclose(yd, ys, rtol=1e-4, atol=1e-5 * scale)),
        "paper": paper_row(case.net, case.layer, batch),
    }
    return row


# ============================================================================ environment

def _show_config() -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        np.show_config()
    return buf.getvalue()


def _blas_from_config(text: str) -> str:
    """numpy's build-time BLAS (``blas_opt_info`` libraries): what it linked, not what ran."""
    lines = text.splitlines()
    for i, l in enumerate(lines):
        if l.strip().startswith("blas_opt_info"):
            for m in lines[i + 1:i + 6]:
                if "libraries" in m:
                    return m.split("=", 1)[1].strip()
    return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextlib.contextmanager
def blas_threads(threads: Optional[int]):
    """Limit BLAS to ``threads`` (threadpoolctl); yields a description of the BLAS that will run."""
    info = {"requested_threads": threads, "numpy_build_blas": _blas_from_config(_show_config()),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    try:
        import threadpoolctl
    except ImportError:
        info.update(controlled=False, libraries=[],
                    note="threadpoolctl is not installed: BLAS threads follow OPENBLAS_NUM_THREADS / "
                         "MKL_NUM_THREADS as set when numpy was imported")
        yield info
        return
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas") if threads else contextlib.nullcontext():
        libs = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "filepath")}
                for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
        info.update(controlled=bool(threads), libraries=libs, threadpoolctl=threadpoolctl.__version__)
        yield info


def blas_summary(info: dict) -> str:
    libs = info.get("libraries") or []
    if libs:
        s = ", ".join("%s %s, threads=%s" % (l["internal_api"], l["version"], l["num_threads"]) for l in libs)
    else:
        s = "numpy's %s (threads not controlled)" % info.get("numpy_build_blas")
    return s


def environment() -> dict:
    import scipy

    try:
        load = [round(x, 2) for x in os.getloadavg()]   # a shared machine: other work skews timings
    except OSError:
        load = None
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "loadavg_1_5_15min": load, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "platform": platform.platform()}


# ============================================================================ run

def run_bench(cases: Sequence[Case], batches: Sequence[int] = BATCHES, threads: Optional[int] = DEFAULT_THREADS,
              seed: int = 0, min_seconds: float = 0.25, min_repeats: int = 5,
              log: Callable[[str], None] = print) -> dict:
    """Time every case at every batch size; returns a JSON-able result (rows, BLAS, environment)."""
    if not cases:
        raise InputError("nothing to benchmark")
    bad = [b for b in batches if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1]
    if bad:
        raise InputError("batch sizes must be integers >= 1, got %r" % (bad[0],))
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise InputError("--threads must be >= 1, got %r" % (threads,))
    rng = np.random.default_rng(seed)
    rows = []
    with blas_threads(threads) as blas:
        log("bench-sparse: BLAS %s; scipy CSR single-threaded; CPU %s" % (blas_summary(blas), cpu_model()))
        for c in cases:
            for b in batches:
                r = bench_case(c, int(b), rng, min_repeats=min_repeats, min_seconds=min_seconds)
                rows.append(r)
                p = r["paper"]
                log("bench-sparse: %s %s %s b=%d: dense %.1f us, sparse %.1f us per sample, speedup %.2f%s  [%s]"
                    % (c.net, c.layer, "x".join(map(str, r["shape"])), b, r["dense_us"], r["sparse_us"],
                       r["speedup"], " (paper %.2f)" % p["speedup"] if p else "", c.source))
    return {"rows": rows, "batches": [int(b) for b in batches], "blas": blas, "environment": environment(),
            "paper_platform": PAPER_CPU, "seed": int(seed),
            "sources": sorted({c.source for c in cases}),
            "geomean_speedup": {str(b): _geomean([r["speedup"] for r in rows if r["batch"] == b]) for b in batches},
            "paper_geomean_speedup": {str(b): _geomean([r["paper"]["speedup"] for r in rows
                                                        if r["batch"] == b and r["paper"]]) for b in batches}}


def _geomean(xs: Sequence[float]) -> Optional[float]:
    xs = [x for x in xs if x and x > 0]
    return float(np.exp(np.mean(np.log(xs)))) if xs else None


# ============================================================================ reports

HEADERS = ["net", "layer", "shape", "W%", "batch", "dense µs", "sparse µs", "speedup",
           "paper dense µs", "paper sparse µs", "paper speedup"]


def table_rows(result: dict) -> List[list]:
    out = []
    for r in result["rows"]:
        p = r["paper"] or {}
        f = lambda v, d=1: "–" if v is None else "%.*f" % (d, v)
        out.append([r["net"], r["layer"], "x".join(map(str, r["shape"])), "%.1f%%" % (100 * r["density"]),
                    r["batch"], f(r["dense_us"]), f(r["sparse_us"]), f(r["speedup"], 2),
                    f(p.get("dense_us")), f(p.get("sparse_us")), f(p.get("speedup"), 2)])
    for b in result["batches"]:
        g, pg = result["geomean_speedup"].get(str(b)), result["paper_geomean_speedup"].get(str(b))
        out.append(["geomean", "", "", "", b, "", "", "–" if g is None else "%.2f" % g, "", "",
                    "–" if pg is None else "%.2f" % pg])
    return out


def text_report(result: dict) -> str:
    from caffe_dc.base.tables import text_table

    head = "dense (numpy BLAS) vs CSR (scipy), µs per sample; ours: %s, %s; paper Table 8: %s" % (
        blas_summary(result["blas"]), result["environment"]["cpu"], result["paper_platform"])
    return "\n".join([head, "weights: " + "; ".join(result["sources"]), text_table(HEADERS, table_rows(result))])


def markdown_report(result: dict, command: Optional[str] = None, plot: Optional[str] = None) -> str:
    from caffe_dc.base.tables import markdown_table

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
    """Grouped bars, ours vs paper dense/sparse speedup per layer, one panel per batch size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = result["batches"]
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches):
        rows = [r for r in result["rows"] if r["batch"] == b]
        labels = ["%s\n%s" % ({"alexnet": "AlexNet", "vgg16": "VGG-16"}.get(r["net"], r["net"]), r["layer"])
                  for r in rows]
        x = np.arange(len(rows))
        ours = [r["speedup"] for r in rows]
        theirs = [r["paper"]["speedup"] if r["paper"] else np.nan for r in rows]
        for dx, vals, lab in ((-0.2, ours, "ours (%s)" % blas_summary(result["blas"])),
                              (0.2, theirs, "paper (%s)" % result["paper_platform"])):
            bars = ax.bar(x + dx, vals, 0.4, label=lab)
            for bar, v in zip(bars, vals):
                if np.isfinite(v):
                    ax.annotate("%.2f" % v, (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 1), textcoords="offset points")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("speedup dense / sparse")
        ax.set_title("batch %d" % b)
        ax.legend(fontsize=7)
    fig.suptitle("Pruned fc layers, dense vs CSR (%s)" % "; ".join(result["sources"])[:120], fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def write_outputs(result: dict, out_dir: str, command: Optional[str] = None) -> Dict[str, str]:
    """``bench_sparse.json``, ``bench_sparse.md`` and ``bench_sparse.png`` into ``out_dir`` (atomically)."""
    import json

    from caffe_dc.pipeline.storage import json_safe

    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "bench_sparse.json"), "markdown": os.path.join(out_dir, "bench_sparse.md"),
             "plot": os.path.join(out_dir, "bench_sparse.png")}
    plot_speedups(result, paths["plot"])
    atomic_write(paths["json"], json.dumps(json_safe(dict(result, command=command, files=paths)), indent=2,
                                           allow_nan=False).encode())
    atomic_write(paths["markdown"], markdown_report(result, command, paths["plot"]).encode())
    return paths
