"""CLI subcommands for the compression stages: ``prune``, ``quantize`` and ``reproduce`` (see ``cli.COMMANDS``)."""
from __future__ import annotations

import json
import os

from caffe_dc.base import defaults
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import check_outputs, require_file
from caffe_dc.cli.args import (DEFAULT_BITS_HELP, add_data_args, add_run_args, bits, check_layers, data_info,
                               data_options, density, expand, layer_values, numpy_seed, positive_float, positive_int,
                               run_options, seed_count)
from caffe_dc.algorithms.cluster_config import CentroidGrad, Init, choices

# What each stage writes into its output folder: none of them may be the stage's input.
PRUNE_FILES = ("pruned.caffemodel", "train_val.prototxt", "base_train_val.prototxt", "metrics.json")
QUANTIZE_FILES = ("quantized.caffemodel", "clustered.caffemodel", "clusters.json", "train_val.prototxt",
                  "base_train_val.prototxt", "metrics.json")


def _check_stage_outputs(args, out, names):
    check_outputs([args.caffemodel, args.idx], files=[os.path.join(out, n) for n in names],
                  folders=[out, args.data_root])


def cmd_prune(p):
    p.add_argument("net", help="lenet-300-100 | lenet-5")
    p.add_argument("caffemodel", help="trained reference caffemodel")
    add_data_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--density", type=layer_values(density),
                   help="final kept fraction per layer, e.g. ip1=0.08,ip2=0.09 or 0.1 for all "
                        "(default: the paper's per-layer densities)")
    g.add_argument("--quality", type=layer_values(positive_float),
                   help="threshold = quality x std per layer, e.g. ip1=1.2 or 1.0 for all")
    p.add_argument("--layers", help="comma-separated layers to prune (default: all that have a target)")
    p.add_argument("--rounds", type=positive_int, default=3, help="prune/retrain rounds (default 3)")
    p.add_argument("--iters", type=positive_int, default=4000, help="retraining iterations per round (default 4000)")
    p.add_argument("--lr-factor", type=positive_float, default=defaults.LR_FACTOR,
                   help="retraining base_lr = factor x original (default %(default)s)")
    p.add_argument("--out", help="output folder (default: runs/<net>-<data>/pruned)")
    p.add_argument("--verbose", action="store_true")

    def run(args):
        from caffe_dc.pycaffe import nets
        from caffe_dc.algorithms import pruning
        from caffe_dc.pycaffe import rewrite
        from caffe_dc.pycaffe.caffemodel import load_net_proto
        from caffe_dc.stages.prune import PruneConfig, run_pruning

        spec = nets.get(args.net)
        require_file(args.caffemodel, "caffemodel")
        layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
        proto = load_net_proto(spec.train_val)
        all_layers = rewrite.select_layers(proto, layers)
        check_layers(args.density, rewrite.prunable_layers(proto), "--density")
        check_layers(args.quality, rewrite.prunable_layers(proto), "--quality")
        if args.out:
            _check_stage_outputs(args, args.out, PRUNE_FILES)
        dens = expand(args.density, all_layers)
        qual = expand(args.quality, all_layers)
        if dens is None and qual is None:
            dens = {k: v for k, v in pruning.PAPER_DENSITY.get(spec.name, {}).items() if k in all_layers}
            if not dens:
                raise InputError("no paper densities for %s: give --density or --quality" % spec.name)
        if layers:
            dens = {k: v for k, v in dens.items() if k in all_layers} if dens else None
            qual = {k: v for k, v in qual.items() if k in all_layers} if qual else None
        info = data_info(args, quiet=True)
        out = args.out or os.path.join("runs", "%s-%s" % (spec.name, info.name), "pruned")
        _check_stage_outputs(args, out, PRUNE_FILES)
        cfg = PruneConfig(densities=dens, qualities=qual, rounds=args.rounds, iters_per_round=args.iters,
                          lr_factor=args.lr_factor)
        print("prune %s (%s) -> %s" % (spec.name, info.name, out))
        m = run_pruning(spec.name, args.caffemodel, info, out, cfg, layers=all_layers, verbose=args.verbose)
        print(m["table"])
        print("accuracy: reference %.2f%%, pruned %.2f%%" % (100 * m["reference_accuracy"], 100 * m["accuracy"]))
        print("wrote %s, %s and %s" % (m["caffemodel"], m["prototxt"], os.path.join(out, "metrics.json")))
        return 0
    return run


def cmd_quantize(p):
    p.add_argument("net", help="lenet-300-100 | lenet-5")
    p.add_argument("caffemodel", help="pruned caffemodel (from `caffe-dc prune`), or any trained one")
    add_data_args(p)
    p.add_argument("--bits", type=layer_values(bits),
                   help="bits per layer, e.g. conv1=8,ip1=5 or 6 for all (default: %s)" % DEFAULT_BITS_HELP)
    p.add_argument("--init", default="linear", choices=choices(Init),
                   help="centroid initialisation (default linear, the paper's)")
    p.add_argument("--iters", type=positive_int, default=2000, help="fine-tuning iterations (default 2000)")
    p.add_argument("--centroid-grad", default="sum", choices=choices(CentroidGrad),
                   help="a centroid's gradient: the sum of its weights' gradients (the paper's, default) or their mean")
    p.add_argument("--lr-factor", type=positive_float, default=defaults.LR_FACTOR,
                   help="fine-tuning base_lr = factor x original (default %(default)s)")
    p.add_argument("--seed", type=numpy_seed, default=0)
    p.add_argument("--out", help="output folder (default: runs/<net>-<data>/quantized)")
    p.add_argument("--verbose", action="store_true")

    def run(args):
        from caffe_dc.pycaffe import nets
        from caffe_dc.stages.quantize import QuantConfig, run_quantization

        spec = nets.get(args.net)
        require_file(args.caffemodel, "caffemodel")
        from caffe_dc.pycaffe import rewrite
        from caffe_dc.pycaffe.caffemodel import load_net_proto

        layers = rewrite.prunable_layers(load_net_proto(spec.train_val))
        check_layers(args.bits, layers, "--bits")
        bits = expand(args.bits, layers)
        if args.out:
            _check_stage_outputs(args, args.out, QUANTIZE_FILES)
        info = data_info(args, quiet=True)
        out = args.out or os.path.join("runs", "%s-%s" % (spec.name, info.name), "quantized")
        _check_stage_outputs(args, out, QUANTIZE_FILES)
        cfg = QuantConfig(bits=bits, init=args.init, iters=args.iters, lr_factor=args.lr_factor, seed=args.seed,
                          centroid_grad=args.centroid_grad)
        print("quantize %s (%s) -> %s" % (spec.name, info.name, out))
        m = run_quantization(spec.name, args.caffemodel, info, out, cfg, verbose=args.verbose)
        print(m["table"])
        print("accuracy: pruned %.2f%%, clustered %.2f%%, fine-tuned %.2f%%"
              % (100 * m["accuracy_pruned"], 100 * m["accuracy_before_finetune"], 100 * m["accuracy"]))
        print("wrote %s and %s" % (m["caffemodel"], os.path.join(out, "metrics.json")))
        return 0
    return run


def cmd_reproduce(p):
    p.add_argument("net", help="lenet-300-100 | lenet-5 | alexnet | vgg16 (these two need ImageNet LMDBs)")
    add_data_args(p)
    p.add_argument("--quick", action="store_true", help="a few minutes' preset, for tests and a first look")
    p.add_argument("--seeds", type=seed_count, default=1, metavar="N",
                   help="run N seeds (seed, seed+1, ...) and report mean ± sd of the rate and the accuracy change")
    g = p.add_argument_group("ImageNet data (alexnet, vgg16) and preset overrides (any net)")
    add_run_args(p, g, own_net=False)
    g.add_argument("--imagenet-train", metavar="LMDB", help="training LMDB (convert_imageset, 256x256)")
    g.add_argument("--imagenet-val", metavar="LMDB", help="validation LMDB")
    g.add_argument("--ref-iters", type=positive_int, help="reference training iterations (default: the preset's)")
    g.add_argument("--batch", type=positive_int, help="training batch size override")
    g.add_argument("--test-batch", type=positive_int, help="test batch size override")
    g.add_argument("--crop", type=positive_int, help="crop size override (small smoke-test images)")

    def run(args):
        from caffe_dc.pycaffe import nets
        from caffe_dc.pycaffe import rewrite
        from caffe_dc.pycaffe.caffemodel import load_net_proto
        from caffe_dc.pipeline.reproduce import Pipeline, run_seeds

        spec = nets.get(args.net)
        layers = rewrite.prunable_layers(load_net_proto(spec.train_val))
        check_layers(args.density, layers, "--density")
        check_layers(args.bits, layers, "--bits")
        check_outputs([args.weights, args.idx, args.imagenet_train, args.imagenet_val],
                      folders=[args.out, args.data_root])
        opts = run_options(args, net=spec.name, quick=args.quick, data=data_options(args),
                           imagenet_train=args.imagenet_train, imagenet_val=args.imagenet_val, ref_iters=args.ref_iters,
                           batch=args.batch, test_batch=args.test_batch, crop=args.crop)
        if args.seeds > 1:
            print("wrote %s" % run_seeds(opts, args.seeds))
            return 0
        pl = Pipeline(opts)
        state = pl.run()
        m = json.load(open(os.path.join(pl.run_dir, "metrics.json")))
        print("%s on %s (test split): %d/%d -> %d/%d correct (%+.2f pp), %d -> %d bytes, %.1fx; report: %s"
              % (spec.name, m["dataset"], m["reference_test"]["correct"], m["reference_test"]["n"],
                 m["final_test"]["correct"], m["final_test"]["n"], m["accuracy_delta_pp"], m["dense_bytes"],
                 m["file_bytes"], m["compression"], state["report"]["report"]))
        return 0
    return run
