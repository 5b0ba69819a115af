"""Stage ``control`` (``--dense-control``): the reference retrained as long as the compressed net, uncompressed.

Retraining at a lower learning rate can lift a net by itself; the control
measures how much, so that the report can tell what compression costs
from what the extra training gives. It restarts the solver once per
pruning round and once for the fine-tuning, for the same iterations, with
no masks.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe import rewrite, solving
from caffe_dc.pycaffe.retraining import retrain
from caffe_dc.stages.run import Run, StageRecord

SKIPPED = "--dense-control retrains the reference as long, uncompressed, for comparison"


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The dense control: the reference retrained as long, in as many restarts, uncompressed."""
    caffemodel: str
    accuracy: float
    accuracy_top5: Optional[float]
    iters: int
    restarts: int


def wanted(r: Run) -> bool:
    return r.opts.dense_control


def _rounds(r: Run) -> int:
    """As many restarts as the pruning made: the schedule's rounds, or those a closed loop ran."""
    loop = r.out("prune").closed_loop if r.done("prune") else None
    return int(loop["rounds_run"]) if loop else r.schedule.rounds


def stage_inputs(r: Run) -> dict:
    sch = r.schedule
    return {"rounds": _rounds(r), "prune_iters": sch.iters_per_round, "quant_iters": sch.finetune_iters,
            "lr_factor": r.lr_factor}


def run_stage(r: Run) -> Record:
    sp = rewrite.retrain_solver(r.src.solver_for(r.base_path, r.folder("snap")), r.lr_factor)
    sch = r.schedule
    pieces = [("round %d" % k, sch.iters_per_round) for k in range(1, _rounds(r) + 1)]
    pieces.append(("fine-tune", sch.finetune_iters))
    current, result = r.out("reference").caffemodel, {}
    for i, (label, iters) in enumerate(pieces, 1):
        done = r.folder("piece%d.caffemodel" % i)
        meta = r.folder("piece%d.json" % i)
        if os.path.isfile(done) and os.path.isfile(meta):
            with open(meta) as f:
                result = json.load(f)
        else:
            hist = retrain(r.base_path, sp, current, r.folder("piece%d" % i), iters, r.test_iter, done,
                           desc="dense control, %s" % label, snapshot_every=r.snapshot_every, progress=r.progress)
            result = {"piece": label, "iters": iters, "accuracy": solving.accuracy_of(hist[-1]),
                      "accuracy_top5": hist[-1].get("accuracy_top5")}
            atomic_write(meta, json.dumps(result).encode())
        print("  dense control, %s: val accuracy %.2f%% after %d iterations" % (label, 100 * result["accuracy"], iters))
        current = done
    return Record(caffemodel=current, accuracy=result["accuracy"], accuracy_top5=result.get("accuracy_top5"),
                  iters=sum(n for _, n in pieces), restarts=len(pieces))
