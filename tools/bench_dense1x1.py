#!/usr/bin/env python3
"""Measure the codec on a net whose 1x1 convolutions are nearly dense (SYNTHETIC weights).

Issue 15's "done when": on a net whose 1x1 layers keep >= 99% of their
weights, the ``.dcz`` comes within 3% of the zero-order entropy bound of its
streams plus codebooks and biases, and is at least 20% smaller than the
same net in the authors' ``.net`` format.

The model has ResNet-50's layer shapes (``bench_posthoc.resnet50_shapes``)
at a given width. Weights are i.i.d. per layer with a He-like scale,
Laplace in the 1x1 convolutions and the classifier, normal in the others;
biases are small normal values. Every 1x1 convolution keeps 99.0-99.9% of
its weights (magnitude pruning), the 3x3 ones 30-60%, the 7x7 stem 80%,
the classifier 20%; k-means quantizes conv layers to 8 bits and the
classifier to 4 (the ``.net`` format's widths). Layers are renamed so that
the ``.net`` format selects them (``conv`` or ``fc`` in the name).

Figures, per layer and in total:

* ``dcz``: the ``.dcz`` file (``codec.frontend.encode_params``, default
  index widths: auto), and with the paper's widths (``--index-bits paper``:
  8 conv / 5 fc for a net that is not the paper's) for comparison;
* ``bound``: the zero-order entropy bound of the stored code and gap
  streams (the figures ``caffe-dc inspect`` prints,
  ``ModelStats.totals()["entropy_bits"]``) plus the codebooks and the raw
  float32 biases;
* ``net``: the same quantized net in the authors' format
  (``codec.han_net.write_net``, the writer behind ``caffe-dc export-net``).

    python3 tools/bench_dense1x1.py [--width 0.5] [--out results/bench/dense1x1.json]
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_posthoc import resnet50_shapes  # noqa: E402
from caffe_dc.base.blobs import CODEBOOK, CODES, blob_name  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.codec import han_net  # noqa: E402
from caffe_dc.codec import frontend  # noqa: E402
from caffe_dc.base import provenance  # noqa: E402


def resnet_layers(width: float = 0.5):
    """(name, type, weight shape) of ResNet-50 at ``width``, renamed for the ``.net`` format (conv / fc)."""
    out = []
    for name, ltype, shape in resnet50_shapes(width):
        if ltype == "InnerProduct":
            name = "fc" if "fc" not in name else name
        elif "conv" not in name:
            name = name.replace("branch", "conv")
        out.append((name, ltype, shape))
    return out


def build(layers, seed: int = 0):
    """(float params, densities, bits) of ``layers`` [(name, type, shape)] before pruning and quantization."""
    rng = np.random.default_rng(seed)
    params = collections.OrderedDict()
    density, bits = {}, {}
    for name, ltype, shape in layers:
        fan_in = int(np.prod(shape[1:]))
        std = np.sqrt(2.0 / fan_in)
        one_by_one = ltype == "Convolution" and tuple(shape[2:]) == (1, 1)
        if one_by_one or ltype == "InnerProduct":
            w = rng.laplace(scale=std / np.sqrt(2), size=shape)
        else:
            w = rng.normal(scale=std, size=shape)
        b = rng.normal(scale=0.01, size=shape[0])
        params[name] = LayerParams(ltype, [w.astype(np.float32), b.astype(np.float32)])
        if ltype == "InnerProduct":
            density[name], bits[name] = 0.2, 4
        elif one_by_one:
            density[name], bits[name] = float(rng.uniform(0.990, 0.999)), 8
        elif tuple(shape[2:]) == (3, 3):
            density[name], bits[name] = float(rng.uniform(0.3, 0.6)), 8
        else:
            density[name], bits[name] = 0.8, 8
    return params, density, bits


def quantized_net(layers, seed: int = 0):
    """The synthetic net of ``layers`` pruned and quantized post hoc (``codec.frontend.post_hoc``)."""
    params, density, bits = build(layers, seed)
    return frontend.post_hoc(params, None, density, bits)


def net_bytes(q) -> int:
    """Size of the quantized net ``q`` in the authors' ``.net`` format."""
    layers = [(n, q[blob_name(n, CODEBOOK)].blobs[0], q[blob_name(n, CODES)].blobs[0].astype(np.uint8),
               q[n].blobs[1]) for n in frontend.compressible(q)]
    return len(han_net.write_net(layers))


def measure(q) -> dict:
    """The figures of the docstring for a quantized net ``q``; the ``.dcz`` is checked to decode bit for bit."""
    data, stats = frontend.encode_params(q, None)
    paper_bytes = len(frontend.encode_params(q, None, default=frontend.IndexWidth.PAPER)[0])
    back, _, _ = frontend.decode_bytes(data)
    layers = frontend.compressible(q)
    exact = all(np.array_equal(back[n].blobs[0], q[n].blobs[0]) for n in layers)
    t = stats.totals()
    codebooks = sum(b.codebook_bits for b in stats.quantized) / 8
    raw = 4 * t["raw_values"]
    bound = t["entropy_bits"] / 8 + codebooks + raw
    han = net_bytes(q)
    rows = []
    for b in stats.quantized:
        rows.append({"layer": b.name, "weights": b.weights, "density": round(b.density, 5),
                     "weight_bits": b.weight_bits, "index_bits": b.index_bits, "record_bytes": b.pqh_bits // 8,
                     "stream_entropy_bytes": round((b.code_entropy + b.gap_entropy) * b.entries / 8, 1),
                     "huffman_bytes": round((b.code_bits + b.gap_bits) / 8, 1)})
    one_by_one = [r for r in rows if q[r["layer"]].blobs[0].shape[2:] == (1, 1)]
    return {
        "weights": int(t["weights"]), "density": t["density"], "layers": len(layers),
        "one_by_one_layers": len(one_by_one),
        "one_by_one_min_density": min(r["density"] for r in one_by_one) if one_by_one else None,
        "one_by_one_dense_records": sum(r["index_bits"] == 0 for r in one_by_one),
        "dcz_bytes": len(data),
        "dcz_paper_widths_bytes": paper_bytes,
        "bound_bytes": round(bound, 1),
        "bound_parts_bytes": {"streams_entropy": round(t["entropy_bits"] / 8, 1), "codebooks": codebooks,
                              "raw_biases": raw},
        "dcz_over_bound": len(data) / bound - 1,
        "net_bytes": han,
        "dcz_vs_net": len(data) / han,
        "bit_exact_round_trip": bool(exact),
        "per_layer": rows,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/dense1x1.json")
    ap.add_argument("--width", type=float, default=0.5, help="channel width of ResNet-50 (0.5: ~6.9M weights)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    q = quantized_net(resnet_layers(args.width), args.seed)
    m = measure(q)
    result = {
        "synthetic": True,
        "note": "SYNTHETIC weights: ResNet-50 layer shapes at width %.3g, i.i.d. Laplace (1x1 convs, fc) or normal "
                "(others); 1x1 convs keep 99.0-99.9%%, 3x3 30-60%%, the stem 80%%, fc 20%% (magnitude pruning); "
                "8-bit k-means for conv, 4-bit for fc. bound = zero-order entropy of the stored code and gap streams "
                "(as caffe-dc inspect shows) + codebooks + raw biases; net = the authors' .net format of the same "
                "quantized net." % args.width,
        "command": "python3 tools/bench_dense1x1.py --width %g --seed %d --out %s" % (args.width, args.seed, args.out),
        "goals": {"dcz_over_bound_at_most": 0.03, "dcz_vs_net_at_most": 0.8},
        "seconds": round(time.perf_counter() - t0, 2),
        # commit, CPU, BLAS and library versions (base.provenance), and how loaded the machine was
        "environment": dict(provenance.environment(), load_average_1min=round(os.getloadavg()[0], 2)),
    }
    result.update(m)
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print("SYNTHETIC ResNet-50 x%g: %d layers, %.2fM weights (%d 1x1 convs at >= %.1f%% kept, %d stored dense)"
          % (args.width, m["layers"], m["weights"] / 1e6, m["one_by_one_layers"],
             100 * m["one_by_one_min_density"], m["one_by_one_dense_records"]))
    print("  .dcz %d bytes (paper widths %d); entropy bound + codebooks + biases %.0f bytes: +%.2f%%"
          % (m["dcz_bytes"], m["dcz_paper_widths_bytes"], m["bound_bytes"], 100 * m["dcz_over_bound"]))
    print("  authors' .net %d bytes: the .dcz is %.1f%% smaller" % (m["net_bytes"], 100 * (1 - m["dcz_vs_net"])))
    print("  bit-exact: %s; wrote %s" % (m["bit_exact_round_trip"], args.out))
    return 0 if m["bit_exact_round_trip"] else 1


if __name__ == "__main__":
    sys.exit(main())
