#!/usr/bin/env python3
"""Quantization experiments of the paper, on a pruned LeNet, through real Caffe.

1. ``init``: accuracy against bits per weight for linear, density and random
   centroid initialisation (the paper's centroid-initialisation figure).
2. ``convfc``: accuracy against bits for conv layers only and fc layers only,
   the other kind left in float32 (the paper's quantisation-bits study);
   needs a net with both (LeNet-5).

Each point clusters the pruned model's layers and fine-tunes the centroids
for ``--iters`` iterations with the group-by-index hooks, then tests on the
whole test set. Writes ``<out>/points.json`` and PNG plots.

    ./dc dev python3 /src/tools/sweep_quantization.py init \\
        --net lenet-300-100 --pruned runs/lenet-300-100-fashion-mnist/prune/pruned.caffemodel --data fashion-mnist \\
        --out results/quantization-init
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.base.mnist import DATA_SETS  # noqa: E402
from caffe_dc.pycaffe import datasets  # noqa: E402
from caffe_dc.report import figures  # noqa: E402
from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.pycaffe import rewrite  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.pycaffe.caffemodel import load_net_proto  # noqa: E402
from caffe_dc.stages.quantize import QuantConfig, run_quantization  # noqa: E402


def point(net, pruned, info, work, bits, init, iters, only, seed):
    tag = "%s_%s_%s" % (init, "-".join(sorted(only)) if only else "all", "-".join("%s%d" % kv for kv in sorted(bits.items())))
    cfg = QuantConfig(bits=bits, init=init, iters=iters, seed=seed, snapshot_every=0)
    m = run_quantization(net, pruned, info, os.path.join(work, tag), cfg, progress=False, only=only)
    return m["accuracy"], m["accuracy_before_finetune"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=["init", "convfc"])
    ap.add_argument("--net", default="lenet-300-100")
    ap.add_argument("--pruned", required=True, help="pruned caffemodel (with mask blobs)")
    ap.add_argument("--bits", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--iters", type=int, default=1000, help="fine-tuning iterations per point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", choices=DATA_SETS, help="the data set the pruned model was trained on (default: mnist)")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from <out>/points.json")
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(args.out, "points.json")) as f:
            saved = json.load(f)
        print("wrote", plot(args.experiment, saved["net"], saved["dataset"], saved["points"],
                            saved["pruned_accuracy"], args.out))
        return
    spec = nets.get(args.net)
    info = datasets.prepare(data=args.data, quiet=True)
    work = os.path.join(args.out, "work")
    layers = rewrite.prunable_layers(load_net_proto(spec.train_val))
    types = {l.name: l.type for l in load_net_proto(spec.train_val).layer}
    bits_list = [int(b) for b in args.bits.split(",")]
    ref = solving.accuracy_of(solving.evaluate(*_pruned_net(spec, info, args.pruned, work), solving.test_iters_for(
        nets.for_data(spec.name, info), info.split("val")[1])))
    points = []
    t0 = time.time()
    if args.experiment == "init":
        groups = [(init, None) for init in ("linear", "density", "random")]
    else:
        convs = [n for n in layers if types[n] == "Convolution"]
        fcs = [n for n in layers if types[n] == "InnerProduct"]
        if not convs or not fcs:
            raise SystemExit("convfc needs a net with conv and fc layers (lenet-5)")
        groups = [("conv", convs), ("fc", fcs)]
    for label, only in groups:
        for b in bits_list:
            qlayers = only or layers
            init = label if args.experiment == "init" else "linear"
            acc, before = point(spec.name, args.pruned, info, work, {n: b for n in qlayers}, init, args.iters,
                                only, args.seed)
            points.append({"group": label, "bits": b, "accuracy": acc, "accuracy_before_finetune": before})
            print("%-8s %d bits: %.2f%% (before fine-tuning %.2f%%)" % (label, b, 100 * acc, 100 * before), flush=True)
    cmd = "python3 tools/sweep_quantization.py " + " ".join(sys.argv[1:])
    atomic_write(os.path.join(args.out, "points.json"), json.dumps(
        {"experiment": args.experiment, "net": spec.name, "dataset": info.name, "pruned_model": args.pruned,
         "pruned_accuracy": ref, "iters": args.iters, "points": points, "command": cmd,
         "seconds": time.time() - t0}, indent=2).encode())
    png = plot(args.experiment, spec.name, info.name, points, ref, args.out)
    print("wrote", png, "and", os.path.join(args.out, "points.json"))


def plot(experiment, net, dataset, points, pruned_accuracy, out):
    title = ("%s, %s: centroid initialisation" % (net, dataset) if experiment == "init"
             else "%s, %s: conv vs fc bits (other layers float32)" % (net, dataset))
    return figures.accuracy_vs(points, "bits", "accuracy", "group", os.path.join(out, "%s.png" % experiment),
                               "bits per weight", "validation accuracy after fine-tuning (%)", title,
                               reference=pruned_accuracy, reference_label="pruned model, before quantization")


def _pruned_net(spec, info, pruned, work):
    """The masked train_val for testing the pruned model as it is."""
    from caffe_dc.pycaffe.caffemodel import load_params, save_net_proto

    params = load_params(pruned)
    layers = [n for n in params if n.endswith("_mask")]
    shapes = {n[:-5]: params[n].blobs[0].shape for n in layers}
    net = rewrite.add_blobs(nets.for_data(spec.name, info), shapes, [rewrite.MASK])
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "pruned_train_val.prototxt")
    save_net_proto(net, path)
    return path, pruned


if __name__ == "__main__":
    main()
