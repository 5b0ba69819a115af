#!/usr/bin/env python3
"""Retraining speed with caffe-dc's hooks against plain Caffe on the same net.

For each LeNet: plain SGD on the unmodified net; then the pruning setup
(mask blobs + mask hook, paper densities); then the quantization setup
(mask, codebook and codes blobs + group-by-index hook, paper bits). Weights
are the solver's own initialisation, pruned by magnitude: the per-iteration
cost does not depend on how well trained they are. Each configuration runs
``--warmup`` untimed then ``--iters`` timed iterations, best of ``--repeats``.

    ./dc dev python3 /src/tools/bench_hooks.py --out runs/bench/hooks.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.pycaffe import datasets  # noqa: E402
from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.algorithms import pruning  # noqa: E402
from caffe_dc.pycaffe import rewrite  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.pycaffe.caffemodel import load_params, save_net_proto, save_params  # noqa: E402
from caffe_dc.pycaffe.hooks import CompressionHooks  # noqa: E402
from caffe_dc.stages.prune import with_masks  # noqa: E402
from caffe_dc.base.layer_policy import default_bits  # noqa: E402
from caffe_dc.stages.quantize import quantize_params  # noqa: E402
from caffe_dc.algorithms.quantization import Init  # noqa: E402
from caffe_dc.stages.reference import environment  # noqa: E402


def timed(solver, warmup, iters, repeats):
    if warmup:
        solver.step(warmup)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        solver.step(iters)
        best = max(best, iters / (time.perf_counter() - t))
    return best


def bench_net(name, info, work, warmup, iters, repeats):
    """Build the three solvers, then time them in turns (best of ``repeats`` each), so that a
    slow spell of a shared machine hits all three alike."""
    spec = nets.get(name)
    base = nets.for_data(spec.name, info)
    base_path = os.path.join(work, name + "_base.prototxt")
    save_net_proto(base, base_path)
    sp = nets.solver_for(spec.name, base_path, os.path.join(work, name))
    sp.test_iter[:] = [1]

    solvers = {"plain": solving.make_solver(sp, os.path.join(work, name + "_plain_solver.prototxt"))}
    init = os.path.join(work, name + "_init.caffemodel")
    solvers["plain"].net.save(init)

    params = load_params(init)
    layers = rewrite.prunable_layers(base)
    dens = pruning.PAPER_DENSITY[spec.name]
    masks = {n: pruning.density_mask(params[n].blobs[0], dens[n]) for n in layers}
    pruned = with_masks(params, masks)
    shapes = {n: params[n].blobs[0].shape for n in layers}
    types = {l.name: l.type for l in base.layer}
    bits = {n: default_bits(types[n], spec.name, n) for n in layers}
    quant, _ = quantize_params(pruned, layers, bits, Init.LINEAR, 0)
    hooks = []
    for tag, model, kinds in (("masks", pruned, [rewrite.MASK]),
                              ("codebooks", quant, [rewrite.CODEBOOK, rewrite.CODES])):
        net = rewrite.add_blobs(base, shapes, kinds, {n: 2 ** bits[n] for n in layers})
        tv = os.path.join(work, "%s_%s.prototxt" % (name, tag))
        save_net_proto(net, tv)
        cm = os.path.join(work, "%s_%s.caffemodel" % (name, tag))
        save_params(model, cm)
        s2 = type(sp)()
        s2.CopyFrom(sp)
        s2.net = tv
        s = solving.make_solver(s2, os.path.join(work, "%s_%s_solver.prototxt" % (name, tag)))
        s.net.copy_from(cm)
        hooks.append(CompressionHooks(s.net).install(s))
        solvers[tag] = s
    for s in solvers.values():
        s.step(warmup)
    res = {tag: 0.0 for tag in solvers}
    for _ in range(repeats):
        for tag, s in solvers.items():
            res[tag] = max(res[tag], timed(s, 0, iters, 1))
    res["masks_ratio"] = res["masks"] / res["plain"]
    res["codebooks_ratio"] = res["codebooks"] / res["plain"]
    return res


def training_bench_args(doc: str, nets: str, repeats: int, out: str):
    """(args, data info, work folder) of a training benchmark (this one and bench_train.py): the same
    options, defaults aside, and the same data."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--nets", default=nets)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--out", default=out)
    args = ap.parse_args()
    work = os.path.join(os.path.dirname(args.out) or ".", os.path.splitext(os.path.basename(args.out))[0] + "_work")
    os.makedirs(work, exist_ok=True)
    return args, datasets.prepare(quiet=True), work


def main():
    args, info, work = training_bench_args(__doc__, "lenet-300-100,lenet-5", 5, "runs/bench/hooks.json")
    results = {}
    print("%-15s %10s %10s %10s %8s %8s" % ("net", "plain it/s", "masks", "codebooks", "ratio", "ratio"))
    for name in args.nets.split(","):
        r = bench_net(name, info, work, args.warmup, args.iters, args.repeats)
        results[name] = r
        print("%-15s %10.1f %10.1f %10.1f %7.2fx %7.2fx" % (name, r["plain"], r["masks"], r["codebooks"],
                                                          r["masks_ratio"], r["codebooks_ratio"]))
    out = {"benchmark": "retraining iter/s: caffe-dc hooks vs plain Caffe", "iters": args.iters,
           "warmup": args.warmup, "repeats": args.repeats, "data": info.name,
           "environment": environment(solving.import_caffe()), "results": results,
           "command": "python3 tools/bench_hooks.py " + " ".join(sys.argv[1:])}
    atomic_write(args.out, json.dumps(out, indent=2).encode())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
