"""Train a net, compressed or not, resumable after a kill.

Pruning, quantization, the dense control and reference training all run
through here: load a caffemodel (or keep the fillers) into the net, install
the mask/codebook hooks when the net has such blobs, and run SGD.
Snapshots (caffemodel + solverstate, taken with the codebook blobs synced)
land in ``out_dir`` every ``snapshot_every`` iterations, whole: Caffe writes
them in a staging folder and they are moved into place, solverstate last.
A rerun restores the newest one instead of starting over. The finished
model is written atomically, so its presence means the training is done.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
from typing import Callable, Dict, List, Optional

from caffe_dc.algorithms.early_stopping import EarlyStopping
from caffe_dc.algorithms.quantization import CentroidGrad
from caffe_dc.pycaffe import caffemodel
from caffe_dc.pycaffe import solving
from caffe_dc.base.errors import InputError, InternalError
from caffe_dc.base.fileio import atomic_path
from caffe_dc.pycaffe.hooks import CompressionHooks

STAGING = ".staging"


def latest_snapshot(prefix: str) -> Optional[str]:
    best, best_it = None, -1
    for p in glob.glob(prefix + "_iter_*.solverstate"):
        m = re.search(r"_iter_(\d+)\.solverstate$", p)
        if m and int(m.group(1)) > best_it and os.path.isfile(p[: -len(".solverstate")] + ".caffemodel"):
            best, best_it = p, int(m.group(1))
    return best


def _snapshot(solver, staged_prefix: str, prefix: str) -> None:
    """Caffe writes its snapshot files in place, so a kill mid-write leaves a truncated solverstate
    that Caffe later aborts on. Write them in a staging folder and move them into place, the
    caffemodel first and the solverstate last: a solverstate that exists is whole, and so is its
    caffemodel."""
    solver.snapshot()
    staged = "%s_iter_%d" % (staged_prefix, solver.iter)
    final = "%s_iter_%d" % (prefix, solver.iter)
    os.replace(staged + ".caffemodel", final + ".caffemodel")
    with open(staged + ".solverstate", "rb") as f:
        state = f.read()
    caffemodel.atomic_write(final + ".solverstate",
                            caffemodel.relink_solverstate(state, os.path.abspath(final + ".caffemodel")))
    os.unlink(staged + ".solverstate")


def _restore(solver, state_path: str, staging: str, iter_size: int = 1) -> None:
    """Restore with the solverstate pointed at the caffemodel beside it *now*, so a run folder
    that was moved or copied still resumes."""
    with open(state_path, "rb") as f:
        state = f.read()
    here = os.path.abspath(state_path[: -len(".solverstate")] + ".caffemodel")
    try:
        state = caffemodel.relink_solverstate(state, here)
    except ValueError as e:
        raise InputError("snapshot %s is damaged (%s); delete it to retrain from the start" % (state_path, e))
    tmp = os.path.join(staging, "restore.solverstate")
    caffemodel.atomic_write(tmp, state)
    try:
        solver.restore(tmp)
    finally:
        os.unlink(tmp)
    skip_batches(solver.net, solver.iter * max(1, iter_size))


def skip_batches(net, n: int) -> None:
    """Advance the training net's Data layers by ``n`` batches, as the run before the kill had.

    Caffe's restore brings back the weights, the momentum history and the
    iteration, but a new net's Data layer starts reading at record 0. Without
    this, the first batch after resuming at iteration k would be batch 0, not
    batch k, and the resumed run would end in a different model. Only the
    data layers run (``forward(end=...)``), so the cost is reading n batches.
    """
    names = [name for name, layer in zip(net._layer_names, net.layers) if layer.type == "Data"]
    if not names or n <= 0:
        return
    last = names[-1]
    for _ in range(int(n)):
        net.forward(end=last)


def retrain(net_prototxt: str, solver_param, init_caffemodel: Optional[str], out_dir: str, iters: int, test_iter: int,
            final_caffemodel: str, desc: str = "retrain", snapshot_every: int = 1000, test_every: int = 0,
            progress: bool = True, verbose: bool = False,
            centroid_grad: CentroidGrad = CentroidGrad.SUM, eval_every: int = 0,
            on_eval: Optional[Callable[[object, List[Dict[str, float]]], Optional[str]]] = None
            ) -> List[Dict[str, float]]:
    """Train to ``final_caffemodel``; returns the test history (last entry = final).

    ``init_caffemodel`` None starts from the net's fillers (reference training, seeded by the
    solver's ``random_seed``); a net without mask/codebook blobs trains without hooks.

    With ``on_eval`` (early stopping) the training runs in pieces of ``eval_every`` iterations,
    each ending with a test, and ``on_eval(solver, history)`` follows each: None goes on, a
    caffemodel's path stops there and becomes ``final_caffemodel``. It must decide from ``history``
    alone, which a resumed run restores up to its snapshot, so a killed run replays the same
    decisions. Snapshots are then taken at the first piece's end at or past each multiple of
    ``snapshot_every``, never at the stop.

    Over 60 lines, kept whole: the order of training, snapshot and final write in one place is what
    makes a kill at any point safe to resume."""
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, "snap")
    sp = type(solver_param)()
    sp.CopyFrom(solver_param)
    sp.net = os.path.abspath(net_prototxt)
    sp.max_iter = iters
    sp.snapshot = 0  # we snapshot ourselves, after syncing the codebook blobs
    staging = os.path.join(out_dir, STAGING)
    os.makedirs(staging, exist_ok=True)
    sp.snapshot_prefix = os.path.join(staging, "snap")
    del sp.test_iter[:]
    sp.test_iter.append(test_iter)
    solver = solving.make_solver(sp, os.path.join(out_dir, "solver.prototxt"), verbose)
    history_path = os.path.join(out_dir, "history.json")
    history = _resume(solver, prefix, staging, sp.iter_size, history_path, init_caffemodel, desc, progress)
    hooks = CompressionHooks(solver.net, centroid_grad=centroid_grad)
    if hooks.layers:
        hooks.install(solver)

    if on_eval and eval_every < 1:
        raise InternalError("retrain: on_eval needs eval_every >= 1, got %r" % (eval_every,))
    remaining = iters - solver.iter
    step = eval_every if on_eval else snapshot_every if snapshot_every else remaining
    keep = None
    bar = solving.progress_bar(iters, solver.iter, desc, progress)   # one for the phase, across its pieces
    try:
        while remaining > 0 and keep is None:
            n = min(step, remaining)
            history.extend(solving.run(solver, n, test_iter, test_every=0 if on_eval else test_every, desc=desc,
                                       progress=progress, bar=bar))
            if on_eval:
                hooks.sync_blobs()   # a best it saves is then exactly codebook[codes], as a snapshot is
            keep = on_eval(solver, history) if on_eval else None
            remaining = iters - solver.iter
            due = not on_eval or (snapshot_every and
                                  solver.iter // snapshot_every > (solver.iter - n) // snapshot_every)
            if remaining > 0 and keep is None and due:
                hooks.sync_blobs()
                caffemodel.atomic_write(history_path, json.dumps(history).encode())
                _snapshot(solver, sp.snapshot_prefix, prefix)
                _prune_snapshots(prefix, keep=solver.iter)
    finally:
        bar.close()
    if not history or history[-1].get("iter") != solver.iter:  # nothing trained (iters 0, or resumed at the end)
        m = solving.test_net_metrics(solver.test_nets[0], test_iter)
        m["iter"] = solver.iter
        history.append(m)
    if keep is not None:
        with atomic_path(final_caffemodel) as tmp:
            shutil.copyfile(keep, tmp)
    else:
        hooks.sync_blobs()
        solving.save_net(solver.net, final_caffemodel)
    _prune_snapshots(prefix, keep=None)
    shutil.rmtree(staging, ignore_errors=True)
    if os.path.exists(history_path):
        os.unlink(history_path)
    return history


def _resume(solver, prefix: str, staging: str, iter_size: int, history_path: str, init_caffemodel: Optional[str],
            desc: str, progress: bool) -> List[Dict[str, float]]:
    """Restore the newest snapshot and the test history up to it, or load ``init_caffemodel``."""
    state = latest_snapshot(prefix)
    if not state:
        if init_caffemodel is not None:
            solver.net.copy_from(init_caffemodel)
        return []
    _restore(solver, state, staging, iter_size)
    history: List[Dict[str, float]] = []
    if os.path.isfile(history_path):
        with open(history_path) as f:
            history = [h for h in json.load(f) if h.get("iter", 0) <= solver.iter]
    if progress:
        print("  resuming %s from iteration %d" % (desc, solver.iter))
    return history


def _prune_snapshots(prefix: str, keep: Optional[int]) -> None:
    """Snapshots are only for resuming: keep the newest, drop the rest (all once finished)."""
    for p in glob.glob(prefix + "_iter_*"):
        m = re.search(r"_iter_(\d+)\.(solverstate|caffemodel)$", p)
        if m and (keep is None or int(m.group(1)) != keep):
            os.unlink(p)


def evaluations(history) -> list:
    """[[iteration, validation accuracy], ...] of a training's test history."""
    out = []
    for h in history:
        acc = solving.accuracy_of(h)
        if acc is None:
            raise InputError("early stopping needs the net's accuracy on the validation split; its TEST outputs "
                             "are %s" % ", ".join(sorted(k for k in h if k != "iter")))
        out.append([h["iter"], acc])
    return out


class KeepBest:
    """``retrain``'s ``on_eval`` for early stopping (reference training) and for keeping the best of a
    fine-tuning: save each new best's weights, and name the best file when the rule stops. A best file
    is kept until a snapshot no longer needs it: a run resumed from the newest snapshot replays from
    there, so it needs the best as of that snapshot and rewrites (same bytes) any newer one."""

    def __init__(self, rule: EarlyStopping, out_dir: str):
        self.rule, self.out_dir = rule, out_dir

    def path(self, it: int) -> str:
        return os.path.join(self.out_dir, "best_iter_%d.caffemodel" % it)

    def __call__(self, solver, history) -> Optional[str]:
        evals = evaluations(history)
        d = self.rule.decide(evals)
        if d.best_iter == solver.iter:
            solving.save_net(solver.net, self.path(solver.iter))
            snap = latest_snapshot(os.path.join(self.out_dir, "snap"))
            at_snap = int(re.search(r"_iter_(\d+)\.solverstate$", snap).group(1)) if snap else 0
            needed = self.rule.decide([e for e in evals if e[0] <= at_snap]).best_iter
            self.clear(keep=(d.best_iter, needed))
        return self.path(d.best_iter) if d.stop else None

    def clear(self, keep=()) -> None:
        for p in glob.glob(os.path.join(self.out_dir, "best_iter_*.caffemodel")):
            m = re.search(r"_iter_(\d+)\.caffemodel$", p)
            if m and int(m.group(1)) not in keep:
                os.unlink(p)
