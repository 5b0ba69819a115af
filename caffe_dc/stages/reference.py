"""Reference training of a net through pycaffe (the model that gets compressed).

Either for a fixed number of iterations, or until validation accuracy stops
improving (``algorithms.early_stopping``: the schedule's
``reference_eval_every`` / ``reference_patience``, ``reference_iters`` the
cap). Early stopping keeps the best model: each new best's weights are saved
beside the snapshots (``best_iter_N.caffemodel``) and the best one becomes the
reference when the rule stops the run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Optional

from caffe_dc.algorithms.early_stopping import EarlyStopping
from caffe_dc.pycaffe import nets
from caffe_dc.pycaffe import retraining
from caffe_dc.pycaffe import solving
from caffe_dc.base import provenance
from caffe_dc.base.fileio import atomic_path, atomic_write
from caffe_dc.pycaffe.caffemodel import save_net_proto
from caffe_dc.base.fingerprint import file_digest
from caffe_dc.stages.run import Run, StageRecord
from caffe_dc.pycaffe.datasets import DataInfo  # noqa: F401 (type of ``info``)


def train_reference(net_name: str, info: DataInfo, out_dir: str, iters: Optional[int] = None,
                    seed: int = 1, test_every: int = 0, progress: bool = True, verbose: bool = False,
                    batch: Optional[int] = None, test_batch: Optional[int] = None, base_lr: Optional[float] = None,
                    snapshot_every: Optional[int] = None, rule: Optional[EarlyStopping] = None,
                    solver_fields: Optional[dict] = None) -> dict:
    """Train ``net_name`` from scratch on ``info``; write caffemodel + metrics.json in ``out_dir``.

    ``rule`` trains until validation accuracy stops improving, at most ``rule.max_iters``
    (``iters`` and ``test_every`` are then unused) and keeps the best model. ``solver_fields`` (a
    schedule's ``reference_solver``) override the net's solver for this training only."""
    spec = nets.get(net_name)
    os.makedirs(out_dir, exist_ok=True)
    # Tested on the validation split while training: the test split is kept for the final figures.
    eval_lmdb, n_eval = info.split("val")
    net_param = nets.train_val_with_sources(spec.name, info.train_lmdb, eval_lmdb, batch=batch, test_batch=test_batch,
                                            n_test=n_eval)
    tv_path = os.path.join(out_dir, "train_val.prototxt")
    save_net_proto(net_param, tv_path)
    titer = solving.test_iters_for(net_param, n_eval)
    overrides = dict(solver_fields or {}, test_iter=titer, random_seed=seed)
    if rule is not None:
        overrides["max_iter"] = rule.check().max_iters
    elif iters is not None:
        overrides["max_iter"] = iters
    if base_lr is not None:
        overrides["base_lr"] = base_lr
    sp = nets.solver_for(spec.name, tv_path, os.path.join(out_dir, "snap"), **overrides)
    caffe = solving.import_caffe(verbose)
    t0 = time.time()
    model = os.path.join(out_dir, "%s.caffemodel" % spec.name)
    keeper = retraining.KeepBest(rule, out_dir) if rule is not None else None
    # The solver's own snapshot interval becomes the resume point: a rerun after a kill goes on
    # from the newest snapshot rather than from iteration 0.
    history = retraining.retrain(tv_path, sp, None, out_dir, sp.max_iter, titer, model,
                                 desc="train %s" % spec.name, snapshot_every=snapshot_every or sp.snapshot or 1000,
                                 test_every=test_every, progress=progress, verbose=verbose,
                                 eval_every=rule.eval_every if rule else 0, on_eval=keeper)
    final = history[-1]
    stop = {"stopped_at": final["iter"], "best_iter": None, "rule": "fixed: %d iterations" % sp.max_iter}
    if keeper is not None:
        d = rule.decide(retraining.evaluations(history))
        final = next(h for h in history if h["iter"] == d.best_iter)
        stop = {"stopped_at": d.last_iter, "best_iter": d.best_iter, "rule": rule.describe(), "stop_reason": d.reason,
                "early_stopping": rule.to_dict(), "evaluations": retraining.evaluations(history)}
        keeper.clear()
    metrics = {
        "net": spec.name, "dataset": info.name, "iters": final["iter"], "seed": seed,
        "accuracy": solving.accuracy_of(final), "test": final, "history": history,
        "train_seconds": time.time() - t0, "caffemodel": model,
        "command": " ".join(["caffe-dc"] + sys.argv[1:]),
        "environment": environment(caffe),
    }
    metrics.update(stop)
    atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2).encode())
    return metrics


def environment(caffe=None) -> dict:
    """``base.provenance.environment()``; kept for callers that still pass the caffe module (it is found anyway)."""
    return provenance.environment()


# ---------------------------------------------------------------- the pipeline's stage

def stage_inputs(r: Run) -> dict:
    inputs = {"ref_iters": r.ref_iters, "seed": r.opts.seed, "snapshot_every": r.snapshot_every,
              "weights": file_digest(r.opts.weights) if r.opts.weights else None}
    rule = r.schedule.reference_rule()
    if rule is not None:    # only then: a fixed-length schedule's inputs, and so its run folders, stay as they were
        inputs["ref_early_stopping"] = rule.to_dict()
    if r.schedule.reference_anneal:
        inputs["ref_anneal_lr_factor"] = r.lr_factor
    if r.schedule.reference_solver:
        inputs["ref_solver"] = r.schedule.reference_solver
    return inputs


def anneal(r: Run, start: str, rule: EarlyStopping) -> dict:
    """The stopped reference trained on at the retraining learning rate (``lr_factor`` x the solver's), under
    the same rule, keeping the best: the annealing a learning-rate decay would give, which the dense control
    (retrained at that rate) would otherwise credit to itself."""
    from caffe_dc.pycaffe import rewrite

    out_dir = r.folder("anneal")
    sp = rewrite.retrain_solver(r.src.solver_for(r.base_path, os.path.join(out_dir, "snap")), r.lr_factor)
    keeper = retraining.KeepBest(rule, out_dir)
    final = r.folder("annealed.caffemodel")
    history = retraining.retrain(r.base_path, sp, start, out_dir, rule.max_iters, r.test_iter, final,
                                 desc="reference, annealed", snapshot_every=r.snapshot_every, progress=r.progress,
                                 eval_every=rule.eval_every, on_eval=keeper)
    d = rule.decide(retraining.evaluations(history))
    keeper.clear()
    best = next(h for h in history if h["iter"] == d.best_iter)
    print("  annealed at lr x %g: val accuracy %.2f%% at iteration %d, the best; stopped at %d (%s)"
          % (r.lr_factor, 100 * solving.accuracy_of(best), d.best_iter, d.last_iter, d.reason))
    return {"caffemodel": final, "accuracy": solving.accuracy_of(best), "best_iter": d.best_iter,
            "stopped_at": d.last_iter, "stop_reason": d.reason, "evaluations": retraining.evaluations(history)}


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The reference model and how it was made: given (``source``), a fixed length, or early stopping."""
    caffemodel: str
    accuracy: float                       # on the validation split
    iters: int
    stopped_at: Optional[int]
    best_iter: Optional[int]
    rule: str
    accuracy_top5: Optional[float] = None
    source: Optional[str] = None          # --weights
    stop_reason: Optional[str] = None     # early stopping: why it stopped, and every evaluation
    evaluations: Optional[list] = None
    anneal: Optional[dict] = None         # the annealing at the retraining rate, when the schedule asks for it
    OPTIONAL = ("accuracy_top5", "source", "stop_reason", "evaluations", "anneal")


def run_stage(r: Run) -> Record:
    """The reference: ``--weights`` copied in and scored on the validation split, or trained here."""
    model = r.folder("%s.caffemodel" % r.src.file_stem)
    given = r.opts.weights
    if given:   # checked against the net before the run started (``Pipeline.check``)
        os.makedirs(os.path.dirname(model), exist_ok=True)
        with atomic_path(model) as tmp:
            shutil.copyfile(given, tmp)
        m = solving.evaluate(r.base_path, model, r.test_iter)
        print("  reference val accuracy %.2f%% (given weights)" % (100 * solving.accuracy_of(m)))
        return Record(caffemodel=model, accuracy=solving.accuracy_of(m), accuracy_top5=m.get("accuracy_top5"),
                      iters=0, source=given, stopped_at=None, best_iter=None, rule="given weights")
    rule = r.schedule.reference_rule()
    m = train_reference(r.src.name, r.info, r.folder(), iters=r.ref_iters, seed=r.opts.seed,
                        test_every=max(r.ref_iters // 5, 1), progress=r.progress, rule=rule,
                        solver_fields=r.schedule.reference_solver)
    if rule is None:
        print("  reference val accuracy %.2f%% after %d iterations" % (100 * m["accuracy"], m["iters"]))
    else:
        print("  reference val accuracy %.2f%% at iteration %d, the best; stopped at %d (%s)"
              % (100 * m["accuracy"], m["best_iter"], m["stopped_at"],
                 "no new best in %d evaluations" % rule.patience if m["stop_reason"] == "patience" else "the cap"))
    out = {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "iters": m["iters"],
           "stopped_at": m["stopped_at"], "best_iter": m["best_iter"], "rule": m["rule"]}
    if rule is not None:
        out.update(stop_reason=m["stop_reason"], evaluations=m["evaluations"])
    if r.schedule.reference_anneal:
        a = anneal(r, m["caffemodel"], rule)
        out.update(anneal=a, caffemodel=a["caffemodel"], accuracy=a["accuracy"])
    return Record(**out)
