#!/usr/bin/env python3
"""Retraining recipes against a `reproduce` run's own, on the validation split, through real Caffe.

Starts from a finished run folder of `caffe-dc reproduce NET` (its reference,
its pruned model and its schedule) and changes one thing at a time:

* ``rounds``: the same final densities reached geometrically in the
  schedule's own number of rounds (the chooser's spacing against the old
  presets'), and in 3 rounds of equal total retraining (more rounds against
  fewer, longer ones);
* ``lr``: the retraining learning rate (``lr_factor``) x0.3 and x3;
* ``finetune``: centroid fine-tuning of the run's pruned model with summed
  and averaged cluster gradients (``CentroidGrad``), at the schedule's
  length and at three times it.

Each variant's accuracy is counted on the whole validation split (never the
test split) and given with its Wilson 95% interval. Writes
``<out>/recipes.json`` and ``<out>/recipes.md``; work goes to ``--work``
(resumable: a finished variant is not trained again).

    ./dc dev python3 /src/tools/sweep_recipes.py --net lenet-300-100 \\
        --run /work/runs/lenet-300-100-fashion-mnist --out /src/results/recipes-lenet-300-100
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
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.provenance import environment  # noqa: E402
from caffe_dc.base.tables import markdown_table, text_table  # noqa: E402
from caffe_dc.base.mnist import DATA_SETS  # noqa: E402
from caffe_dc.pycaffe import datasets, nets  # noqa: E402
from caffe_dc.stages.prune import PruneConfig, run_pruning  # noqa: E402
from caffe_dc.stages.quantize import QuantConfig, run_quantization  # noqa: E402

EXPERIMENTS = ("rounds", "lr", "finetune")


def _row(group, label, what, acc, n, iters, seconds, baseline=False):
    k = int(round(acc * n))
    lo, hi = stats.wilson(k, n)
    return {"group": group, "variant": label, "what": what, "correct": k, "n": n, "accuracy": k / n,
            "wilson": [lo, hi], "retrain_iters": iters, "seconds": round(seconds, 1), "baseline": baseline}


def main():
    """The sweep's options and its loop over recipes, kept together so the record of a sweep reads top to bottom."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", required=True, help="lenet-300-100 | lenet-5")
    ap.add_argument("--run", required=True, help="run folder of `caffe-dc reproduce NET` (finished)")
    ap.add_argument("--out", required=True, help="where recipes.json and recipes.md go")
    ap.add_argument("--work", help="working folder (default: <run>/recipes)")
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated: " + ", ".join(EXPERIMENTS))
    ap.add_argument("--data-root", default="runs/data")
    args = ap.parse_args()
    only = [x for x in args.only.split(",") if x]
    bad = [x for x in only if x not in EXPERIMENTS]
    if bad:
        ap.error("unknown experiment(s) %s" % ", ".join(bad))
    with open(os.path.join(args.run, "pipeline.json")) as f:
        state = json.load(f)
    spec = nets.get(args.net)
    # the run's own data set (a built-in one: the run folder records which)
    data = state["data"]["name"]
    if data not in DATA_SETS:
        ap.error("the run read %s, not a built-in data set (%s)" % (data, ", ".join(DATA_SETS)))
    info = datasets.prepare(data=data, out_root=args.data_root, quiet=True)
    _, n_val = info.split("val")
    src = nets.registry_source(spec.name, info)
    sch = schedules.load_schedule(os.path.join(args.run, "schedule.json"), src.layer_types())
    work = args.work or os.path.join(args.run, "recipes")
    ref, pruned = state["reference"]["caffemodel"], state["prune"]["caffemodel"]
    final = sch.final_densities()
    R, it, ft, lr = sch.rounds, sch.iters_per_round, sch.finetune_iters, sch.lr_factor
    rows = []
    t0 = time.time()

    def prune(label, what, rounds, iters, lr_factor=lr, round_densities=None):
        t = time.time()
        cfg = PruneConfig(densities=final, rounds=rounds, iters_per_round=iters, lr_factor=lr_factor,
                          snapshot_every=0, round_densities=round_densities)
        m = run_pruning(spec.name, ref, info, os.path.join(work, label), cfg, progress=False)
        rows.append(_row("pruning", label, what, m["accuracy"], n_val, rounds * iters, time.time() - t))
        print("  %-28s %.2f%%" % (label, 100 * m["accuracy"]), flush=True)

    def finetune(label, what, iters, grad):
        t = time.time()
        q = state["quantize"]["inputs"]   # the run's own clustering: the variants change only what they name
        cfg = QuantConfig(bits=q["bits"], init=q["init"], seed=q["seed"], iters=iters, lr_factor=lr,
                          centroid_grad=grad, snapshot_every=0)
        m = run_quantization(spec.name, pruned, info, os.path.join(work, label), cfg, progress=False)
        rows.append(_row("fine-tuning", label, what, m["accuracy"], n_val, iters, time.time() - t))
        print("  %-28s %.2f%%" % (label, 100 * m["accuracy"]), flush=True)

    print("recipes for %s from %s (validation split, %d images)" % (spec.name, args.run, n_val), flush=True)
    rows.append(_row("pruning", "run", "the run's schedule: %d rounds x %d, chooser's spacing, lr x%g"
                     % (R, it, lr), state["prune"]["accuracy"], n_val, R * it, 0, baseline=True))
    if "rounds" in only:
        prune("geometric-%d" % R, "%d rounds x %d, geometric spacing" % (R, it), R, it)
        prune("geometric-3-long", "3 rounds x %d (the same total), geometric" % (R * it // 3), 3, R * it // 3)
    if "lr" in only:
        for f in (0.3, 3.0):
            prune("lr-x%g" % f, "the run's rounds, lr x%g" % (lr * f), R, it, lr * f, sch.densities)
    rows.append(_row("fine-tuning", "run", "the run's fine-tuning: %d iterations, %s gradients"
                     % (ft, {"sum": "summed", "mean": "averaged"}[sch.centroid_grad]),
                     state["quantize"]["accuracy"], n_val, ft, 0, baseline=True))
    if "finetune" in only:
        finetune("mean-%d" % ft, "%d iterations, averaged gradients" % ft, ft, "mean")
        finetune("sum-%d" % (3 * ft), "%d iterations, summed gradients" % (3 * ft), 3 * ft, "sum")
        finetune("mean-%d" % (3 * ft), "%d iterations, averaged gradients" % (3 * ft), 3 * ft, "mean")
    cmd = "python3 tools/sweep_recipes.py " + " ".join(sys.argv[1:])
    doc = {"net": spec.name, "dataset": info.name, "split": "validation", "n": n_val, "run": args.run,
           "schedule": sch.to_dict(), "rows": rows, "command": cmd, "environment": environment(sys.argv),
           "seconds": round(time.time() - t0, 1)}
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "recipes.json"), json.dumps(doc, indent=2).encode())
    headers = ["group", "variant", "what", "val correct", "accuracy", "95% CI", "retraining iters"]
    cells = [[r["group"], r["variant"] + (" (baseline)" if r["baseline"] else ""), r["what"],
              "%d/%d" % (r["correct"], r["n"]), "%.2f%%" % (100 * r["accuracy"]),
              "%.2f-%.2f%%" % (100 * r["wilson"][0], 100 * r["wilson"][1]), r["retrain_iters"]] for r in rows]
    table = markdown_table(headers, cells)
    md = ("# Retraining recipes for %s, on the validation split\n\nMade by `%s`. Each row changes one thing "
          "against the run's own recipe (baseline rows); accuracy is counted on all %d validation images, "
          "never on test.\n\n%s\n" % (spec.name, cmd, n_val, table))
    atomic_write(os.path.join(args.out, "recipes.md"), md.encode())
    print(text_table(headers, cells))
    print("wrote", os.path.join(args.out, "recipes.md"))


if __name__ == "__main__":
    main()
