#!/usr/bin/env python3
"""Reference training recipes for a LeNet on the validation split, through real Caffe.

Trains the net from its fillers with the net's own solver and one change of
learning-rate recipe (``--base-lr``, ``--policy``, ``--steps``), scoring the
whole validation split every ``--eval`` iterations (never the test split:
the reference's recipe is a choice, and choices are made on validation).
Writes ``<out>/curve.json`` (the command, the provenance and each evaluation
with its Wilson 95% interval) and prints a line per evaluation. The recipes
the presets use were chosen from such curves (docs/results.md):

    ./dc dev python3 /src/tools/sweep_reference.py lenet-5 --iters 20000 \\
        --policy multistep --steps 10000,15000 --out /work/runs/sweep-ref/lenet-5-ms
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.algorithms import schedule as schedules  # noqa: E402
from caffe_dc.algorithms import stats  # noqa: E402
from caffe_dc.base.errors import InputError  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.provenance import environment  # noqa: E402
from caffe_dc.pycaffe import datasets, nets, solving  # noqa: E402
from caffe_dc.pycaffe.caffemodel import save_net_proto  # noqa: E402


def recipe_of(a) -> dict:
    """The flags as a schedule's ``reference_solver`` (checked by the same rule as a schedule file)."""
    doc = {"lr_policy": a.policy}
    if a.base_lr is not None:
        doc["base_lr"] = a.base_lr
    if a.policy in ("multistep", "step"):
        doc["gamma"] = a.gamma
    if a.steps:
        doc["stepvalue"] = [int(s) for s in a.steps.split(",")]
    return schedules.check_reference_solver(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("net", choices=["lenet-300-100", "lenet-5"])
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--policy", default="inv", help="Caffe lr_policy (default: the solver's inv)")
    ap.add_argument("--base-lr", type=float, help="default: the solver's")
    ap.add_argument("--gamma", type=float, default=0.1, help="the step policies' factor (default 0.1)")
    ap.add_argument("--steps", default="", help="multistep: iterations where lr drops, comma-separated")
    ap.add_argument("--eval", type=int, default=2500, help="score the validation split every N iterations")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="mnist", help="a data set name of --data (default mnist)")
    ap.add_argument("--data-root", default="/work/runs/data")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        recipe = recipe_of(a) if (a.policy != "inv" or a.base_lr is not None) else {}
    except InputError as e:
        print("sweep_reference: error: %s" % e, file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    info = datasets.prepare(data=a.data, out_root=a.data_root, quiet=True)
    val_lmdb, n_val = info.split("val")
    tv = nets.train_val_with_sources(a.net, info.train_lmdb, val_lmdb, n_test=n_val)
    tv_path = os.path.join(a.out, "train_val.prototxt")
    save_net_proto(tv, tv_path)
    titer = solving.test_iters_for(tv, n_val)
    sp = nets.solver_for(a.net, tv_path, os.path.join(a.out, "snap"), **dict(
        recipe, test_iter=titer, random_seed=a.seed, max_iter=a.iters, test_interval=10 ** 9, snapshot=0, display=0))
    solver = solving.make_solver(sp, os.path.join(a.out, "solver.prototxt"))
    curve, t0 = [], time.time()
    while solver.iter < a.iters:
        solver.step(min(a.eval, a.iters - solver.iter))
        acc = solving.accuracy_of(solving.test_net_metrics(solver.test_nets[0], titer))
        k = int(round(acc * n_val))
        lo, hi = stats.wilson(k, n_val)
        curve.append({"iter": solver.iter, "val_correct": k, "val_accuracy": k / n_val, "ci95": [lo, hi]})
        print("%6d  val %.2f%% [%.2f, %.2f]  %4.0f s" % (solver.iter, 100 * k / n_val, 100 * lo, 100 * hi,
                                                         time.time() - t0), flush=True)
    doc = {"net": a.net, "data": info.name, "n_val": n_val, "seed": a.seed, "iters": a.iters,
           "reference_solver": recipe, "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
           "environment": environment(), "curve": curve}
    atomic_write(os.path.join(a.out, "curve.json"), json.dumps(doc, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
