"""CLI subcommands for the ImageNet-scale nets without ImageNet: ``storage`` and ``bench-sparse``."""
from __future__ import annotations

import os
import shlex
import sys

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import check_outputs, require_file
from caffe_dc.cli.args import nonnegative_float, numpy_seed, positive_int as _positive_int


def _command_line() -> str:
    return "caffe-dc " + shlex.join(sys.argv[1:])


def cmd_storage(p):
    import argparse

    p.add_argument("net", help="alexnet | vgg16")
    p.add_argument("--weights", metavar="W.caffemodel",
                   help="a caffemodel of the net (e.g. bvlc_alexnet.caffemodel); default: synthetic weights "
                        "(i.i.d. Laplace per layer, scaled as the published prototxt's fillers)")
    p.add_argument("--seed", type=numpy_seed, default=0, help="seed of the synthetic weights and of k-means (default 0)")
    p.add_argument("--out", help="output folder for storage.json, storage.md and <net>.dcz "
                                 "(default: runs/storage-<net>)")
    p.add_argument("--json", metavar="F", help="also write the JSON report here")
    p.add_argument("--fit-sample", type=_positive_int, metavar="N",
                   help="fit each layer's k-means on a random sample of N kept weights, then assign all "
                        "(faster; default: fit on all of them, as quantize_layer)")
    p.add_argument("--shrink", type=_positive_int, default=1, help=argparse.SUPPRESS)  # tests: divide channels

    def run(args):
        from caffe_dc.pipeline import storage
        from caffe_dc.report import storage as report

        net = storage.check_net(args.net)
        if args.weights is not None:
            require_file(args.weights, "caffemodel")
        out = args.out or storage.default_out(net)
        check_outputs([args.weights], files=[os.path.join(out, n) for n in ("storage.json", "storage.md", net + ".dcz")]
                      + [args.json], folders=[out])
        result = storage.run_storage(net, weights=args.weights, seed=args.seed, shrink=args.shrink,
                                     fit_sample=args.fit_sample)
        print(report.text_report(result))
        paths = report.write_outputs(result, out, args.json, _command_line())
        tag = "[%s | %s]" % (net, result.summary["weights"])
        print("%s wrote %s" % (tag, ", ".join(paths[k] for k in ("markdown", "json", "blob"))))
        if args.json:
            print("%s wrote %s" % (tag, args.json))
        return 0
    return run


def cmd_bench_sparse(p):
    import argparse

    p.add_argument("--blob", action="append", metavar="X.dcz",
                   help="a compressed blob (e.g. runs/storage-alexnet/alexnet.dcz); repeat for several. "
                        "Default: AlexNet and VGG-16 fc6-fc8, synthetic weights at the paper's densities, "
                        "compressed and decoded in memory (k-means fitted on a sample of 2**18 weights per "
                        "layer: the values do not affect the timings, only the sparsity pattern does)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="BLAS threads for the dense products (default 1: scipy's CSR product is single-threaded)")
    p.add_argument("--batches", default="1,64", help="batch sizes (default 1,64)")
    p.add_argument("--out", help="output folder for bench_sparse.{json,md,png} (default: runs/bench-sparse)")
    p.add_argument("--seed", type=numpy_seed, default=0)
    p.add_argument("--min-time", type=nonnegative_float, default=0.25, help="seconds of timed runs per case, at least (default 0.25)")
    p.add_argument("--shrink", type=_positive_int, default=1, help=argparse.SUPPRESS)  # tests

    def run(args):
        from caffe_dc.base import paper
        from caffe_dc.pipeline import sparse_bench
        from caffe_dc.report import sparse_bench as report

        try:
            batches = [int(b) for b in args.batches.split(",") if b.strip()]
        except ValueError:
            raise InputError("--batches: %r is not a list of integers" % args.batches)
        if not batches or min(batches) < 1:
            raise InputError("--batches needs integers >= 1, got %r" % args.batches)
        out = args.out or os.path.join("runs", "bench-sparse")
        check_outputs(args.blob or [], files=[os.path.join(out, "bench_sparse." + e) for e in ("json", "md", "png")],
                      folders=[out])
        cases = []
        if args.blob:
            for path in args.blob:
                cases += sparse_bench.cases_from_blob(path)
        else:
            for net in (paper.ALEXNET, paper.VGG16):
                cases += sparse_bench.cases_synthetic(net, seed=args.seed, shrink=args.shrink)
        result = sparse_bench.run_bench(cases, batches, args.threads, seed=args.seed, min_seconds=args.min_time)
        print(report.text_report(result))
        paths = report.write_outputs(result, out, _command_line())
        print("wrote %s" % ", ".join(paths.values()))
        return 0
    return run
