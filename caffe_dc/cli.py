"""The ``caffe-dc`` command line.

Every subcommand is a thin layer over a module; user errors (DCError) come
out as one line and exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import DCError, InputError

COMMANDS = {}


def command(name, help):
    def deco(fn):
        COMMANDS[name] = (fn, help)
        return fn
    return deco


def add_data_args(p):
    g = p.add_argument_group("data (default: Fashion-MNIST from Debian's dataset-fashion-mnist)")
    g.add_argument("--idx", metavar="DIR", help="folder with MNIST-format IDX files (raw or .gz), e.g. real MNIST")
    g.add_argument("--name", help="name for the data set given with --idx (default: mnist)")
    g.add_argument("--download", metavar="mnist", help="download MNIST (needs a network)")
    g.add_argument("--data-root", default="runs/data", help="where LMDBs are written (default: runs/data)")
    g.add_argument("--limit", type=int, help="use only the first N records of each split (quick tests)")


def prepare_data(args, quiet=False):
    from . import datasets

    name = args.name or ("mnist" if args.idx else "fashion-mnist")
    return datasets.prepare(name=name, idx_dir=args.idx, download=args.download,
                            out_root=args.data_root, quiet=quiet, limit=args.limit)


@command("data", "convert MNIST-format IDX files to Caffe LMDBs")
def cmd_data(sub):
    p = sub
    add_data_args(p)

    def run(args):
        info = prepare_data(args)
        print("train: %s (%d records)\ntest:  %s (%d records)" % (info.train_lmdb, info.n_train, info.test_lmdb, info.n_test))
        return 0
    return run


@command("train", "train a reference model through pycaffe")
def cmd_train(p):
    p.add_argument("net", help="lenet-300-100 | lenet-5 (alexnet/vgg16 need ImageNet: see reproduce)")
    add_data_args(p)
    p.add_argument("--iters", type=int, help="iterations (default: the solver's, 10000 for the LeNets)")
    p.add_argument("--test-every", type=int, default=1000, help="test every N iterations (0: only at the end)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="output folder (default: runs/<net>-<data>/reference)")
    p.add_argument("--batch", type=int, help="override the training batch size")
    p.add_argument("--base-lr", type=float, help="override the solver's base_lr")
    p.add_argument("--verbose", action="store_true", help="show Caffe's GLOG output")

    def run(args):
        from . import nets, train

        spec = nets.get(args.net)
        if spec.dataset != "mnist":
            raise InputError("train %s needs ImageNet LMDBs: use `caffe-dc reproduce %s --imagenet-train ...`" % (spec.name, spec.name))
        info = prepare_data(args)
        out = args.out or os.path.join("runs", "%s-%s" % (spec.name, info.name), "reference")
        m = train.train_reference(spec.name, info, out, iters=args.iters, seed=args.seed,
                                  test_every=args.test_every, verbose=args.verbose, batch=args.batch,
                                  base_lr=args.base_lr)
        print("%s on %s: %d iterations, test accuracy %.2f%% (%.1f it/s)" % (
            spec.name, info.name, m["iters"], 100 * m["accuracy"], m["test"]["iters_per_s"]))
        print("wrote %s and %s" % (m["caffemodel"], os.path.join(out, "metrics.json")))
        return 0
    return run


def build_parser():
    parser = argparse.ArgumentParser(
        prog="caffe-dc",
        description="Deep Compression (Han, Mao, Dally, ICLR 2016) on real Caffe: "
                    "pruning, trained quantization, Huffman coding.")
    from . import __version__

    parser.add_argument("--version", action="version", version="caffe-dc " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    _load_plugins()
    for name, (fn, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        runners[name] = fn(p)
    return parser, runners


def _load_plugins():
    # Subcommands defined beside their stage's module register themselves on import.
    for mod in ("cli_stages", "cli_codec", "cli_scale"):
        try:
            __import__("caffe_dc." + mod)
        except ImportError as e:
            if getattr(e, "name", None) != "caffe_dc." + mod:
                raise


def main(argv=None) -> int:
    try:  # progress lines and tables should interleave in order even through a pipe
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        rc = runners[args.command](args)
    except DCError as e:
        print("caffe-dc %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caffe-dc %s: interrupted" % args.command, file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    # Run through the package module so stage modules register into the same COMMANDS.
    from caffe_dc.cli import main as _main

    sys.exit(_main())
