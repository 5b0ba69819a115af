#!/usr/bin/env python3
"""Benchmark the offline codec on an AlexNet-size model (SYNTHETIC weights).

The model has AlexNet's real layer shapes (61M weights), the paper's
per-layer densities (Table 4: 84, 38, 35, 37, 37, 9, 9, 25 %) and bits
(8-bit codes for conv, 5-bit for fc; 4-bit index gaps everywhere), but its
weights are **synthetic**: kept positions are uniform at random (what
magnitude pruning of i.i.d. weights gives) and kept values are Laplace
tails, ``+-(t + Exp(1))``, quantized onto a linear codebook -- the shape of
a magnitude-pruned, linearly-initialised layer. Compressed sizes are
therefore indicative only; the timings and memory are the point.

Measured: encode (codes -> .dcz bytes), decode (bytes -> codes, fully
validated), materialising float32 weights (``to_params``), each as wall
time; then peak traced memory of each phase (tracemalloc, a separate pass)
and the process's peak RSS.

    ./dc dev python3 /src/tools/bench_codec.py [--out runs/bench/codec.json] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.codec import model as codec  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.tables import text_table  # noqa: E402
from caffe_dc.base import provenance  # noqa: E402

# name, type, weight shape, density (paper Table 4), weight bits
ALEXNET = [
    ("conv1", "Convolution", (96, 3, 11, 11), 0.84, 8),
    ("conv2", "Convolution", (256, 48, 5, 5), 0.38, 8),
    ("conv3", "Convolution", (384, 256, 3, 3), 0.35, 8),
    ("conv4", "Convolution", (384, 192, 3, 3), 0.37, 8),
    ("conv5", "Convolution", (256, 192, 3, 3), 0.37, 8),
    ("fc6", "InnerProduct", (4096, 9216), 0.09, 5),
    ("fc7", "InnerProduct", (4096, 4096), 0.09, 5),
    ("fc8", "InnerProduct", (1000, 4096), 0.25, 5),
]
INDEX_BITS = 4


def synthetic_layer(rng, shape, density, bits):
    """Codes of a magnitude-pruned, linearly quantized layer, synthesised directly."""
    size = int(np.prod(shape))
    keep = rng.random(size, dtype=np.float32) < density
    n = int(keep.sum())
    sign = np.where(rng.random(n, dtype=np.float32) < 0.5, -1.0, 1.0).astype(np.float32)
    w = sign * (1.0 + rng.standard_exponential(n, dtype=np.float32))   # |w| > t = 1: Laplace tail
    k = 1 << bits
    lo, hi = float(w.min()), float(w.max())
    codebook = np.zeros(k, dtype=np.float32)
    codebook[1:] = np.linspace(lo, hi, k - 1, dtype=np.float32)       # linear init, entry 0 = pruned
    codes = np.zeros(size, dtype=np.uint8)
    codes[keep] = 1 + np.rint((w - lo) / (hi - lo) * (k - 2)).astype(np.uint8)
    return codebook, codes.reshape(shape)


def build(seed=0):
    rng = np.random.default_rng(seed)
    layers, raw = [], []
    for name, ltype, shape, density, bits in ALEXNET:
        cb, codes = synthetic_layer(rng, shape, density, bits)
        layers.append(codec.QuantizedLayer(name, ltype, 0, cb, codes, bits, INDEX_BITS))
        raw.append(codec.RawBlob(name, ltype, 1, rng.standard_normal(shape[0], dtype=np.float32)))
    return layers, raw


def timed(fn, repeat):
    best, out = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return out, best


def traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/codec.json")
    ap.add_argument("--repeat", type=int, default=1, help="timing repeats (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    layers, raw = build(args.seed)
    t_build = time.perf_counter() - t0

    (data, stats), t_enc = timed(lambda: codec.encode_model_report("alexnet-synthetic", layers, raw), args.repeat)
    dec, t_dec = timed(lambda: codec.decode_model(data), args.repeat)
    params, t_w = timed(lambda: codec.to_params(dec), args.repeat)
    exact = all(np.array_equal(a.codes, b.codes) and np.array_equal(a.codebook, b.codebook)
                for a, b in zip(layers, dec.layers))
    exact = exact and all(np.array_equal(params[q.name].blobs[0], q.codebook[q.codes]) for q in layers)
    del params, dec

    mem_enc = traced_peak(lambda: codec.encode_model("alexnet-synthetic", layers, raw))
    mem_dec = traced_peak(lambda: codec.decode_model(data))
    mem_full = traced_peak(lambda: codec.to_params(codec.decode_model(data)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    tot = stats.totals()
    mb = lambda x: round(x / 2 ** 20, 1)
    result = {
        "synthetic": True,
        "note": "SYNTHETIC weights: AlexNet layer shapes, paper Table 4 densities and bits, random kept positions, "
                "Laplace-tail values on a linear codebook. Sizes are indicative; timings/memory are the measurement.",
        "model": {"layers": [{"name": n, "type": t, "shape": list(s), "density": d, "weight_bits": b,
                              "index_bits": INDEX_BITS} for n, t, s, d, b in ALEXNET],
                  "weights": tot["weights"], "raw_values": tot["raw_values"]},
        "bit_exact_round_trip": bool(exact),
        "seconds": {"encode": round(t_enc, 3), "decode": round(t_dec, 3),
                    "weights_float32": round(t_w, 3), "decode_plus_weights": round(t_dec + t_w, 3),
                    "synthesise_model": round(t_build, 3), "repeat": args.repeat},
        "peak_traced_mib": {"encode": mb(mem_enc), "decode": mb(mem_dec), "decode_plus_weights": mb(mem_full)},
        "peak_rss_mib_process": mb(rss),
        "input_mib": {"codes_uint8": mb(tot["weights"]), "weights_float32": mb(4 * tot["weights"])},
        "file_bytes": len(data),
        "sizes": stats.to_dict(),
        # commit, CPU, BLAS and library versions (base.provenance), and how loaded the machine was
        "environment": dict(provenance.environment(), load_average_1min=round(os.getloadavg()[0], 2)),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())

    print(stats.table())
    print()
    rows = [["encode", t_enc, mb(mem_enc)], ["decode (validated, codes)", t_dec, mb(mem_dec)],
            ["weights = codebook[codes]", t_w, None], ["decode + weights", t_dec + t_w, mb(mem_full)]]
    print(text_table(["phase (SYNTHETIC AlexNet-size, %.1fM weights)" % (tot["weights"] / 1e6), "seconds", "peak MiB"],
                     [[r[0], "%.2f" % r[1], "–" if r[2] is None else "%.0f" % r[2]] for r in rows]))
    print("file %.2f MB (%.2f%% of dense float32, %.1fx); bit-exact: %s; peak RSS %.0f MiB; wrote %s"
          % (len(data) / 1e6, 100 * tot["rate_pqh"], 1 / tot["rate_pqh"], exact, mb(rss), args.out))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
