"""``caffe-dc compress``: the whole chain on a net of your own, as ``caffe train`` would see it."""
from __future__ import annotations

import json
import os

from caffe_dc.base.fileio import check_outputs
from caffe_dc.cli.args import add_budget_args, add_margin_arg, bits, caffe_seed, density, layer_values, positive_int
from caffe_dc.algorithms.cluster_config import Init, choices


def cmd_compress(p):
    p.add_argument("--solver", required=True, metavar="SOLVER.prototxt",
                   help="your solver; its `net:` is a train_val whose TRAIN Data layer (LMDB) trains and whose "
                        "TEST Data layer is the validation split every choice is made on")
    p.add_argument("--weights", required=True, metavar="REF.caffemodel", help="your trained reference model")
    p.add_argument("--schedule", metavar="FILE",
                   help="schedule file (docs/schedule.md); default: conv layers keep 50%%, fc 10%%, in 3 rounds of "
                        "max_iter/5 iterations at 1/10 of base_lr; 8-bit conv, 5-bit fc")
    p.add_argument("--test-lmdb", metavar="LMDB",
                   help="held-out test split for the final figures (default: the TEST Data layer's source, "
                        "and the report says there was no separate test split)")
    add_budget_args(p)
    add_margin_arg(p)
    p.add_argument("--dense-control", action="store_true",
                   help="also retrain the uncompressed reference with the same solvers and iterations")
    p.add_argument("--out", help="run folder (default: runs/compress-<net>-<hash of the inputs>)")
    p.add_argument("--density", type=layer_values(density), help="override final densities, e.g. conv1=0.6 or 0.3")
    p.add_argument("--bits", type=layer_values(bits), help="override weight bits, e.g. 5 or fc=4")
    p.add_argument("--rounds", type=positive_int, help="prune/retrain rounds (default: the schedule's)")
    p.add_argument("--prune-iters", type=positive_int, help="retraining iterations per pruning round")
    p.add_argument("--quant-iters", type=positive_int, help="centroid fine-tuning iterations")
    p.add_argument("--init", default="linear", choices=choices(Init))
    p.add_argument("--seed", type=caffe_seed, default=1, help="Caffe's solver seed, 1..2^31-1 (default 1)")

    def run(args):
        from caffe_dc.pipeline.reproduce import Pipeline
        from caffe_dc.stages.run import RunOptions

        opts = RunOptions(solver=args.solver, test_lmdb=args.test_lmdb, weights=args.weights, schedule=args.schedule,
                          density=args.density, bits=args.bits, init=args.init, seed=args.seed, out=args.out,
                          dense_control=args.dense_control, target_rate=args.target_rate,
                          max_drop=args.max_drop, margin=args.margin, rounds=args.rounds, prune_iters=args.prune_iters,
                          quant_iters=args.quant_iters)
        check_outputs([args.solver, args.weights, args.schedule, args.test_lmdb], folders=[args.out])
        pl = Pipeline(opts)
        state = pl.run()
        with open(os.path.join(pl.run_dir, "metrics.json")) as f:
            m = json.load(f)
        print("%s on %s (%s): %d/%d -> %d/%d correct (%+.2f pp), %d -> %d bytes, %.1fx; report: %s"
              % (m["net"], m["dataset"], "test split" if m["data"]["n_val"] else "TEST source; no held-out split",
                 m["reference_test"]["correct"], m["reference_test"]["n"], m["final_test"]["correct"],
                 m["final_test"]["n"], m["accuracy_delta_pp"], m["dense_bytes"], m["file_bytes"], m["compression"],
                 state["report"]["report"]))
        return 0
    return run
