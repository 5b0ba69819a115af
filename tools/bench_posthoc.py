#!/usr/bin/env python3
"""Benchmark the post-hoc encode path on a ResNet-50-like model (SYNTHETIC weights).

What ``caffe-dc encode`` does with a caffemodel that has no codebooks:
magnitude pruning to a density (``--density``, default 1.0: nothing pruned,
every weight goes through k-means), k-means quantization of every conv and
fc layer at 8 bits (``codec.frontend.post_hoc``), then the encoder
(``codec.frontend.encode_params``: codebook/codes check, relative-index
entries, Huffman coding). The model has the layer shapes of ResNet-50 at
half width (53 convolutions and the classifier, ~6.4M weights, the
projection shortcuts included); weights are i.i.d. Laplace with a He-like
scale per layer, so the k-means problem (millions of distinct values, 255
clusters) is that of a real layer, while sizes are indicative only.

Measured per phase: wall time and the process's CPU time (the machine may
be shared: the CPU time is the steadier figure; the load average is
recorded), the k-means alone (its share of the quantization), and the
bit-exact round trip of the file. ``--sklearn`` also times scikit-learn's KMeans on the largest
layer, as the quantizer ran before ``quantization.lloyd_1d``.

    ./dc dev python3 /src/tools/bench_posthoc.py [--out runs/bench/posthoc.json] [--density D]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.algorithms import quantization  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.codec import model as codec  # noqa: E402
from caffe_dc.codec import frontend  # noqa: E402
from caffe_dc.base import provenance  # noqa: E402

BITS = 8


def resnet50_shapes(width: float = 0.5):
    """(name, type, weight shape) of ResNet-50's conv and fc layers, channels scaled by ``width``."""
    ch = lambda c: max(1, int(round(c * width)))
    out = [("conv1", "Convolution", (ch(64), 3, 7, 7))]
    cin = ch(64)
    for stage, (mid, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=2):
        m, o = ch(mid), ch(4 * mid)
        for b in range(blocks):
            name = "res%d%s" % (stage, "abcdef"[b])
            if b == 0:
                out.append((name + "_branch1", "Convolution", (o, cin, 1, 1)))
            out += [(name + "_branch2a", "Convolution", (m, cin, 1, 1)),
                    (name + "_branch2b", "Convolution", (m, m, 3, 3)),
                    (name + "_branch2c", "Convolution", (o, m, 1, 1))]
            cin = o
    out.append(("fc1000", "InnerProduct", (1000, cin)))
    return out


def build(width: float, seed: int):
    rng = np.random.default_rng(seed)
    params = collections.OrderedDict()
    for name, ltype, shape in resnet50_shapes(width):
        fan_in = int(np.prod(shape[1:]))
        w = rng.laplace(scale=np.sqrt(1.0 / fan_in), size=shape).astype(np.float32)
        params[name] = LayerParams(ltype, [w, np.zeros(shape[0], np.float32)])
    return params


class Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/posthoc.json")
    ap.add_argument("--width", type=float, default=0.5, help="channel width of ResNet-50 (0.5: ~6.4M weights)")
    ap.add_argument("--density", type=float, default=1.0, help="kept share of every layer (1.0: no pruning)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn's KMeans on the largest layer")
    args = ap.parse_args(argv)

    params = build(args.width, args.seed)
    layers = frontend.compressible(params)
    n_weights = sum(params[n].blobs[0].size for n in layers)
    bits = {n: BITS for n in layers}
    dens = {n: args.density for n in layers} if args.density < 1.0 else None

    with Clock() as t_q:
        q = frontend.post_hoc(params, None, dens, bits)
    with Clock() as t_e:
        data, stats = frontend.encode_params(q, None, None)
    total = (t_q.wall + t_e.wall, t_q.cpu + t_e.cpu)
    with Clock() as t_d:
        back, _, _ = frontend.decode_bytes(data)
    exact = all(np.array_equal(back[n].blobs[0], q[n].blobs[0]) for n in layers)

    with Clock() as km:   # the k-means share, again on its own
        for n in layers:     # the kept weights: where the quantized layer is nonzero
            quantization.kmeans(params[n].blobs[0][q[n].blobs[0] != 0], (1 << BITS) - 1)

    sk = None
    if args.sklearn:
        big = max(layers, key=lambda n: params[n].blobs[0].size)
        v = params[big].blobs[0].ravel()
        sk = {"layer": big, "weights": int(v.size)}
        with Clock() as c:
            quantization.kmeans(v[v != 0], (1 << BITS) - 1)
        sk["lloyd_1d_seconds"] = {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}
        with Clock() as c:
            _sklearn_kmeans(v[v != 0], (1 << BITS) - 1)
        sk["sklearn_seconds"] = {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}

    tot = stats.totals()
    r = lambda c: {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}
    result = {
        "synthetic": True,
        "note": "SYNTHETIC weights: ResNet-50 layer shapes at width %.2f, i.i.d. Laplace, post-hoc pruning to "
                "density %.2f and 8-bit k-means on every conv/fc layer, then the encoder. Sizes are indicative; "
                "the timings are the measurement (CPU time is the steadier figure on a shared machine)."
                % (args.width, args.density),
        "model": {"layers": len(layers), "weights": int(n_weights), "density": args.density, "weight_bits": BITS,
                  "index_bits": "auto (each layer the width of its smallest record)"},
        "seconds": {"quantize_post_hoc": r(t_q), "of_which_kmeans": r(km), "encode": r(t_e),
                    "post_hoc_encode_total": {"wall": round(total[0], 3), "cpu": round(total[1], 3)},
                    "decode": r(t_d)},
        "goal_seconds": 2.0,
        "bit_exact_round_trip": bool(exact),
        "file_bytes": len(data),
        "rate_pqh": tot["rate_pqh"],
        "sklearn_comparison": sk,
        # commit, CPU, BLAS and library versions (base.provenance), and how loaded the machine was
        "environment": dict(provenance.environment(), load_average_1min=round(os.getloadavg()[0], 2)),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print("SYNTHETIC ResNet-50 x%.2f: %d layers, %.2fM weights, density %.2f, %d bits"
          % (args.width, len(layers), n_weights / 1e6, args.density, BITS))
    for k, v in result["seconds"].items():
        print("  %-22s wall %6.2f s   cpu %6.2f s" % (k, v["wall"], v["cpu"]))
    if sk:
        print("  largest layer %s (%d weights): lloyd_1d %.2f s cpu, sklearn %.2f s cpu"
              % (sk["layer"], sk["weights"], sk["lloyd_1d_seconds"]["cpu"], sk["sklearn_seconds"]["cpu"]))
    print("file %.2f MB (%.1fx); bit-exact: %s; load average %.1f; wrote %s"
          % (len(data) / 1e6, 1 / tot["rate_pqh"], exact, os.getloadavg()[0], args.out))
    return 0 if exact else 1


def _sklearn_kmeans(values, k):
    """The quantizer's k-means as it ran on scikit-learn (distinct values weighted by their counts)."""
    import warnings

    from sklearn.cluster import KMeans

    v = np.asarray(values, np.float32)
    d, counts = np.unique(v, return_counts=True)
    d64 = d.astype(np.float64)
    start = quantization._top_up(quantization.init_centroids(v, k), d64, k)
    tol = quantization.KMEANS_TOL * float(np.var(v, dtype=np.float64)) / float(np.var(d64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        algorithm = "full" if tuple(int(x) for x in __import__("sklearn").__version__.split(".")[:2]) < (1, 1) else "lloyd"
        KMeans(k, init=start.reshape(-1, 1), n_init=1, algorithm=algorithm, tol=tol,
               max_iter=quantization.KMEANS_MAX_ITER).fit(d64.reshape(-1, 1), sample_weight=counts.astype(np.float64))


if __name__ == "__main__":
    sys.exit(main())
