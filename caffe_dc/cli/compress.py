"""``caffe-dc compress``: the whole chain on a net of your own, as ``caffe train`` would see it."""
from __future__ import annotations

import json
import os

from caffe_dc.base.fileio import check_outputs
from caffe_dc.cli.args import add_run_args, run_options


def cmd_compress(p):
    p.add_argument("--solver", required=True, metavar="SOLVER.prototxt",
                   help="your solver; its `net:` is a train_val whose TRAIN Data layer (LMDB) trains and whose "
                        "TEST Data layer is the validation split every choice is made on")
    p.add_argument("--test-lmdb", metavar="LMDB",
                   help="held-out test split for the final figures (default: the TEST Data layer's source, "
                        "and the report says there was no separate test split)")
    add_run_args(p, p, own_net=True)

    def run(args):
        from caffe_dc.pipeline.reproduce import Pipeline

        opts = run_options(args, solver=args.solver, test_lmdb=args.test_lmdb)
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
