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

This is a benchmark, not a test: nothing here asserts a speed. The tables,
Markdown and plot are made in ``report.sparse_bench``.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.base import paper, provenance
from caffe_dc.base.errors import InputError
from caffe_dc.report.sparse_bench import blas_summary

FC_LAYERS = ("fc6", "fc7", "fc8")
BATCHES = paper.TABLE8_BATCHES
DEFAULT_THREADS = 1
DEFAULT_FIT_SAMPLE = 1 << 18

def paper_row(net: str, layer: str, batch: int) -> Optional[dict]:
    """The paper's dense / sparse µs per sample and their ratio for one case (None if not in Table 8)."""
    r = paper.TABLE8_CPU.get(net, {}).get(layer)
    if r is None or batch not in paper.TABLE8_BATCHES:
        return None
    d, s = (r.dense_b1, r.sparse_b1) if batch == 1 else (r.dense_b64, r.sparse_b64)
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
        w = params[n].blobs[0] if params[n].blobs else np.zeros(0, np.float32)
        # Densities and per-sample times are ratios over the weights: an empty matrix has neither.
        if w.size == 0:
            raise InputError("layer %r of %s holds no weights (shape %s): nothing to benchmark"
                             % (n, source, "x".join(map(str, w.shape)) or "()"))
        # (outputs, inputs flattened), as Caffe reads an InnerProduct's weights; a scalar record has no
        # axes at all: it is one output of one input.
        rows = w.shape[0] if w.ndim else 1
        out.append(Case(net, n, np.ascontiguousarray(w.reshape(rows, -1), dtype=np.float32), source))
    return out


def cases_from_blob(path: str) -> List[Case]:
    """The fc layers of a ``.dcz`` blob, e.g. one written by ``caffe-dc storage``."""
    from caffe_dc.codec import frontend

    params, _, meta = frontend.decode_bytes(frontend.read_blob(path))
    m = meta.get("meta") or {}
    net = m.get("paper_net") or frontend.guess_net(params) or meta.get("net") or "unknown"
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

@contextlib.contextmanager
def blas_threads(threads: Optional[int]):
    """Limit BLAS to ``threads`` (threadpoolctl); yields a description of the BLAS that will run."""
    info = {"requested_threads": threads, "numpy_build_blas": provenance.numpy_build_blas(),
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
        info.update(controlled=bool(threads), libraries=provenance.blas_libraries(),
                    threadpoolctl=threadpoolctl.__version__)
        yield info


def environment() -> dict:
    """``provenance.environment()`` with scipy's version and the load average (other work skews timings)."""
    import scipy

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return dict(provenance.environment(), scipy=scipy.__version__, loadavg_1_5_15min=load)


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
        log("bench-sparse: BLAS %s; scipy CSR single-threaded; CPU %s" % (blas_summary(blas), provenance.cpu_model()))
        for c in cases:
            for b in batches:
                r = bench_case(c, int(b), rng, min_repeats=min_repeats, min_seconds=min_seconds)
                rows.append(r)
                p = r["paper"]
                log("bench-sparse: %s %s %s b=%d: dense %.1f us, sparse %.1f us per sample, speedup %.2f%s  [%s]"
                    % (c.net, c.layer, "x".join(map(str, r["shape"])), b, r["dense_us"], r["sparse_us"],
                       r["speedup"], " (paper %.2f)" % p["speedup"] if p else "", c.source))
    return {"rows": rows, "batches": [int(b) for b in batches], "blas": blas, "environment": environment(),
            "paper_platform": paper.TABLE8_CPU_PLATFORM, "seed": int(seed),
            "sources": sorted({c.source for c in cases}),
            "geomean_speedup": {str(b): _geomean([r["speedup"] for r in rows if r["batch"] == b]) for b in batches},
            "paper_geomean_speedup": {str(b): _geomean([r["paper"]["speedup"] for r in rows
                                                        if r["batch"] == b and r["paper"]]) for b in batches}}


def _geomean(xs: Sequence[float]) -> Optional[float]:
    xs = [x for x in xs if x and x > 0]
    return float(np.exp(np.mean(np.log(xs)))) if xs else None
