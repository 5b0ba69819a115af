#!/usr/bin/env python3
"""Training speed (iter/s) of LeNet-5 and LeNet-300-100 through pycaffe, in the image.

Runs ``--warmup`` untimed iterations, then ``--iters`` timed ones, best of
``--repeats``, on the embedded Fashion-MNIST LMDB, and writes JSON with the
BLAS that Caffe is linked against.

    ./dc dev python3 /src/tools/bench_train.py --out runs/bench/train.json
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.pycaffe.caffemodel import save_net_proto  # noqa: E402
from caffe_dc.stages.reference import environment  # noqa: E402


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_hooks import timed, training_bench_args

    args, info, work = training_bench_args(__doc__, "lenet-5,lenet-300-100", 3, "runs/bench/train.json")
    results = {}
    for name in args.nets.split(","):
        spec = nets.get(name)
        base = nets.train_val_with_sources(spec.name, info.train_lmdb, info.test_lmdb)
        tv = os.path.join(work, spec.name + ".prototxt")
        save_net_proto(base, tv)
        sp = nets.solver_for(spec.name, tv, os.path.join(work, spec.name))
        s = solving.make_solver(sp, os.path.join(work, spec.name + "_solver.prototxt"))
        results[spec.name] = {"iters_per_s": timed(s, args.warmup, args.iters, args.repeats),
                              "batch": int(base.layer[0].data_param.batch_size)}
        print("%-15s %8.1f iter/s" % (spec.name, results[spec.name]["iters_per_s"]))
    out = {"benchmark": "reference training iter/s through pycaffe", "iters": args.iters, "warmup": args.warmup,
           "repeats": args.repeats, "data": info.name, "environment": environment(solving.import_caffe()),
           "results": results, "command": "python3 tools/bench_train.py " + " ".join(sys.argv[1:])}
    atomic_write(args.out, json.dumps(out, indent=2).encode())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
