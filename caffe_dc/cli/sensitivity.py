"""CLI: ``sensitivity`` (measure each layer's accuracy against density) and ``choose`` (densities + schedule)."""
from __future__ import annotations

import json
import os

from caffe_dc.base.errors import InputError
from caffe_dc.cli.args import (DEFAULT_BITS_HELP, add_data_args, bits, check_layers, compression_rate, data_info,
                               expand, int_at_least, layer_values, nonnegative_float, nonnegative_int, positive_float,
                               positive_int)
from caffe_dc.stages.choose import Recipe

RECIPE = Recipe()   # the chooser's defaults, shown by --help


def cmd_sensitivity(p):
    p.add_argument("net", metavar="NET_OR_PROTOTXT",
                   help="lenet-300-100 | lenet-5 | alexnet | vgg16, or your own train_val prototxt "
                        "(with a TEST Data layer and an Accuracy layer)")
    p.add_argument("caffemodel", help="the trained (dense) caffemodel")
    p.add_argument("--lmdb", help="validation LMDB (never the test split: choices are made on it); default: "
                                  "the validation split of the data options below, for the MNIST-sized nets")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="writes DIR/sensitivity.json and .png")
    p.add_argument("--images", type=positive_int, default=2000, help="validation images used, the LMDB's first N (default 2000)")
    p.add_argument("--grid", help="densities to try, e.g. 0.5,0.2,0.1 (default: 1.0 down to 0.01 in 19 steps)")
    p.add_argument("--layers", help="comma-separated layers (default: every Convolution / InnerProduct layer)")
    p.add_argument("--batch", type=positive_int, help="largest batch (default: the TEST Data layer's; one dividing the images)")
    p.add_argument("--split", default="validation", help="what the LMDB is, recorded in the JSON and the plot "
                                                         "(default: validation)")
    p.add_argument("--verbose", action="store_true")
    add_data_args(p)

    def run(args):
        from caffe_dc.algorithms.sensitivity import density_grid
        from caffe_dc.report import sensitivity as report
        from caffe_dc.stages.sensitivity import run_sensitivity

        from caffe_dc.base.fileio import check_outputs

        if not args.lmdb:
            args.lmdb = validation_lmdb(args)
        check_outputs([args.caffemodel, args.lmdb, args.net if os.path.isfile(args.net) else None],
                      [os.path.join(args.out, f) for f in ("sensitivity.json", "sensitivity.png",
                                                           "sensitivity_net.prototxt")], [args.out])
        layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
        grid = density_grid(args.grid) if args.grid else None
        print("sensitivity of %s on %s -> %s" % (args.net, args.lmdb, args.out))
        doc = run_sensitivity(args.net, args.caffemodel, args.lmdb, args.out, images=args.images, grid=grid,
                              layers=layers, batch=args.batch, split=args.split, verbose=args.verbose)
        j, png = report.write(doc, args.out)
        print("wrote %s and %s (%.0f s)" % (j, png, doc["seconds"]))
        return 0
    return run


def validation_lmdb(args) -> str:
    """The validation split of the data options, for one of the MNIST-sized nets of the registry."""
    from caffe_dc.pycaffe import nets

    if os.path.isfile(args.net) or nets.get(args.net).dataset != nets.Dataset.MNIST:
        raise InputError("give the validation LMDB with --lmdb (the data options make one only for the LeNets)")
    info = data_info(args, quiet=True)
    if not info.has_val:
        raise InputError("the data has no validation split: give --lmdb")
    return info.val_lmdb


def cmd_choose(p):
    """choose's options, declared in one place: a long list, not long logic."""
    p.add_argument("sensitivity", help="sensitivity.json from `caffe-dc sensitivity`")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--max-drop", type=nonnegative_float, metavar="PP",
                   help="largest accuracy drop allowed per layer, pruned alone, in percentage points")
    g.add_argument("--target-rate", type=compression_rate, metavar="X",
                   help="estimated compression (pruning + quantization, before Huffman) to reach, > 1, e.g. 40")
    p.add_argument("-o", "--out", help="schedule file (default: schedule.json beside the sensitivity file)")
    p.add_argument("--round-drop", type=positive_float, default=RECIPE.round_drop_pp, metavar="PP",
                   help="largest summed drop one round may add before retraining (default %(default)s pp)")
    p.add_argument("--min-rounds", type=positive_int, default=RECIPE.min_rounds, help="default %(default)s")
    p.add_argument("--max-rounds", type=positive_int, default=RECIPE.max_rounds, help="default %(default)s")
    p.add_argument("--iters", type=positive_int, default=RECIPE.iters,
                   help="retraining iterations per round (default %(default)s)")
    p.add_argument("--finetune-iters", type=nonnegative_int, default=RECIPE.finetune_iters,
                   help="centroid fine-tuning iterations (default %(default)s)")
    p.add_argument("--lr-factor", type=positive_float, default=RECIPE.lr_factor,
                   help="retraining lr = factor x the solver's (default %(default)s)")
    p.add_argument("--bits", type=layer_values(bits),
                   help="weight bits, e.g. 5 or conv1=8,ip1=4 (default: %s)" % DEFAULT_BITS_HELP)
    p.add_argument("--reference-iters", type=positive_int, metavar="N",
                   help="record N as the schedule's reference_iters: the reference `reproduce` trains (give the "
                        "iterations of the model the curves were measured on)")
    p.add_argument("--snapshot-every", type=positive_int, metavar="N", help="record N as the schedule's snapshot_every")
    p.add_argument("--index-bits", type=int_at_least(1), default=RECIPE.index_bits,
                   help="relative-index bits in the rate estimate (default %(default)s)")

    def run(args):
        from caffe_dc.algorithms.schedule import save_schedule
        from caffe_dc.base import paper
        from caffe_dc.base.fileio import check_outputs
        from caffe_dc.report.sensitivity import plot
        from caffe_dc.stages.choose import Budget, Recipe, choose, read_curves

        try:
            with open(args.sensitivity) as f:
                doc = json.load(f)
        except OSError as e:
            raise InputError("cannot read %s: %s" % (args.sensitivity, e.strerror or e))
        except ValueError as e:
            raise InputError("%s is not JSON (%s)" % (args.sensitivity, e))
        out = args.out or os.path.join(os.path.dirname(args.sensitivity), "schedule.json")
        png = os.path.splitext(out)[0] + ".png"
        check_outputs([args.sensitivity], [out, png])
        curves = read_curves(doc, args.sensitivity)
        names = [c.name for c in curves[1]]
        check_layers(args.bits, names, "--bits")
        recipe = Recipe(args.round_drop, args.min_rounds, args.max_rounds, args.iters, args.finetune_iters,
                        args.lr_factor, args.index_bits, args.reference_iters, args.snapshot_every)
        c = choose(doc, Budget(args.max_drop, args.target_rate), recipe, expand(args.bits, names), args.sensitivity,
                   curves, net=doc.get("net") if doc.get("net") in paper.NETS else None)
        save_schedule(c.schedule, out)
        try:
            plot(doc, png, chosen=c.final, title="%s: chosen densities marked" % doc.get("net", ""))
        except ImportError:   # outside the image: the schedule is what matters, the figure is a look at it
            print("note: matplotlib is not installed (pip install 'caffe-dc[plots]'): no %s" % png)
            png = None
        print(c.table)
        print("%d rounds (summed drop before retraining per round: %s pp); estimated P+Q rate %.1fx"
              % (c.plan.rounds, ", ".join("%.2f" % (100 * v) for v in c.plan.round_drop), c.rate))
        print("wrote %s" % " and ".join(p for p in (out, png) if p))
        return 0
    return run
