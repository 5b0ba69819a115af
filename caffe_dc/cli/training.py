"""Commands that make the data and the reference model: ``data`` and ``train``."""
from __future__ import annotations

import os

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import check_outputs
from caffe_dc.cli.args import add_data_args, caffe_seed, data_info, nonnegative_int, positive_float, positive_int


def cmd_data(p):
    add_data_args(p)

    def run(args):
        check_outputs([args.idx], folders=[args.data_root])
        info = data_info(args)
        print("train: %s (%d records)\ntest:  %s (%d records)" % (info.train_lmdb, info.n_train, info.test_lmdb, info.n_test))
        return 0
    return run


def cmd_train(p):
    p.add_argument("net", help="lenet-300-100 | lenet-5 (alexnet/vgg16 need ImageNet: see reproduce)")
    add_data_args(p)
    p.add_argument("--iters", type=positive_int, help="iterations (default: the solver's, 10000 for the LeNets)")
    p.add_argument("--test-every", type=nonnegative_int, default=1000,
                   help="test every N iterations (0: only at the end)")
    p.add_argument("--seed", type=caffe_seed, default=1, help="Caffe's solver seed, 1..2^31-1 (default 1)")
    p.add_argument("--out", help="output folder (default: runs/<net>-<data>/reference)")
    p.add_argument("--batch", type=positive_int, help="override the training batch size")
    p.add_argument("--base-lr", type=positive_float, help="override the solver's base_lr")
    p.add_argument("--verbose", action="store_true", help="show Caffe's GLOG output")

    def run(args):
        from caffe_dc.pipeline.stage_table import FOLDERS
        from caffe_dc.pycaffe import nets
        from caffe_dc.stages import reference

        spec = nets.get(args.net)
        if spec.dataset != "mnist":
            raise InputError("train %s needs ImageNet LMDBs: use `caffe-dc reproduce %s --imagenet-train ...`" % (spec.name, spec.name))
        check_outputs([args.idx], folders=[args.data_root, args.out])
        info = data_info(args)
        out = args.out or os.path.join("runs", "%s-%s" % (spec.name, info.name), FOLDERS["reference"])
        m = reference.train_reference(spec.name, info, out, iters=args.iters, seed=args.seed,
                                  test_every=args.test_every, verbose=args.verbose, batch=args.batch,
                                  base_lr=args.base_lr)
        print("%s on %s: %d iterations, test accuracy %.2f%% (%.1f it/s)" % (
            spec.name, info.name, m["iters"], 100 * m["accuracy"], m["test"]["iters_per_s"]))
        print("wrote %s and %s" % (m["caffemodel"], os.path.join(out, "metrics.json")))
        return 0
    return run
