#!/usr/bin/env python3
"""Accuracy against compression rate for a LeNet at several pruning and quantization settings.

Each point is a whole ``caffe-dc reproduce`` run (prune -> retrain ->
quantize -> fine-tune -> Huffman-encode -> decode -> ``caffe test``) from the
same reference caffemodel, with the paper's per-layer densities scaled by
``--scales`` and every layer quantized to each of ``--bits``. The
compression rate is the real ``.dcz`` file against dense float32. Writes
``<out>/points.json`` and ``<out>/sweep.png``.

    ./dc dev python3 /src/tools/sweep_compression.py --net lenet-300-100 \\
        --weights runs/lenet-300-100-fashion-mnist/reference/lenet-300-100.caffemodel --out results/sweep-lenet-300-100
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from caffe_dc.report import figures  # noqa: E402
from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.base import paper  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="lenet-300-100")
    ap.add_argument("--weights", required=True, help="reference caffemodel shared by every point")
    ap.add_argument("--scales", default="1.0,0.75,0.5,0.3", help="multipliers of the paper's per-layer densities")
    ap.add_argument("--bits", default="6,4,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prune-iters", type=int, default=3000)
    ap.add_argument("--quant-iters", type=int, default=2000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    spec = nets.get(args.net)
    dens = paper.PAPER_DENSITY[spec.name]
    points = []
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for scale in [float(s) for s in args.scales.split(",")]:
        for bits in [int(b) for b in args.bits.split(",")]:
            run = os.path.join(args.out, "work", "s%.2f_b%d" % (scale, bits))
            density = ",".join("%s=%.4f" % (k, min(1.0, v * scale)) for k, v in dens.items())
            cmd = [sys.executable, "-m", "caffe_dc", "reproduce", spec.name, "--weights", args.weights,
                   "--density", density, "--bits", str(bits), "--rounds", str(args.rounds),
                   "--prune-iters", str(args.prune_iters), "--quant-iters", str(args.quant_iters), "--out", run]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
            if r.returncode != 0:
                raise SystemExit("point scale %.2f bits %d failed:\n%s" % (scale, bits, r.stderr[-2000:]))
            m = json.load(open(os.path.join(run, "metrics.json")))
            p = {"density_scale": scale, "bits": bits, "density": m["stages"]["prune"]["density"],
                 "compression": m["compression"],
                 # a sweep is a choice: it reads the validation split, never test
                 "accuracy": m["stages"]["quantize"]["accuracy"],
                 "reference_accuracy": m["stages"]["reference"]["accuracy"], "file_bytes": m["file_bytes"]}
            points.append(p)
            print("scale %.2f (%.1f%% kept), %d bits: %.1fx, accuracy %.2f%% (reference %.2f%%)" % (
                scale, 100 * p["density"], bits, p["compression"], 100 * p["accuracy"], 100 * p["reference_accuracy"]),
                flush=True)
    out = {"net": spec.name, "points": points, "seconds": time.time() - t0,
           "command": "python3 tools/sweep_compression.py " + " ".join(sys.argv[1:])}
    atomic_write(os.path.join(args.out, "points.json"), json.dumps(out, indent=2).encode())
    for p in points:
        p["series"] = "%d-bit weights" % p["bits"]
    png = figures.accuracy_vs(points, "compression", "accuracy", "series", os.path.join(args.out, "sweep.png"),
                              "compression rate (dense float32 / .dcz file, x)", "validation accuracy (%)",
                              "%s: accuracy vs compression (densities = paper's x %s)" % (spec.name, args.scales),
                              reference=points[0]["reference_accuracy"] if points else None, logx=True)
    print("wrote", png)


if __name__ == "__main__":
    main()
