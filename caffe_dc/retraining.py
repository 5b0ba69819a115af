"""Retrain a compressed net under its hooks, resumable after a kill.

Pruning and quantization both end the same way: load a caffemodel that
carries mask/codebook blobs into a rewritten net, install the hooks, and
run SGD. Snapshots (caffemodel + solverstate, taken with the codebook
blobs synced) land in ``out_dir`` every ``snapshot_every`` iterations; a
rerun restores the newest one instead of starting over. The finished model
is written atomically, so its presence means the retraining is done.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, List, Optional

from . import solving
from .hooks import CompressionHooks


def latest_snapshot(prefix: str) -> Optional[str]:
    best, best_it = None, -1
    for p in glob.glob(prefix + "_iter_*.solverstate"):
        m = re.search(r"_iter_(\d+)\.solverstate$", p)
        if m and int(m.group(1)) > best_it and os.path.isfile(p[: -len(".solverstate")] + ".caffemodel"):
            best, best_it = p, int(m.group(1))
    return best


def retrain(net_prototxt: str, solver_param, init_caffemodel: str, out_dir: str, iters: int, test_iter: int,
            final_caffemodel: str, desc: str = "retrain", snapshot_every: int = 1000, test_every: int = 0,
            progress: bool = True, verbose: bool = False) -> List[Dict[str, float]]:
    """Retrain to ``final_caffemodel``; returns the test history (last entry = final)."""
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, "snap")
    sp = type(solver_param)()
    sp.CopyFrom(solver_param)
    sp.net = os.path.abspath(net_prototxt)
    sp.max_iter = iters
    sp.snapshot = 0  # we snapshot ourselves, after syncing the codebook blobs
    sp.snapshot_prefix = prefix
    del sp.test_iter[:]
    sp.test_iter.append(test_iter)
    solver = solving.make_solver(sp, os.path.join(out_dir, "solver.prototxt"), verbose)
    state = latest_snapshot(prefix)
    if state:
        solver.restore(state)
        if progress:
            print("  resuming %s from iteration %d" % (desc, solver.iter))
    else:
        solver.net.copy_from(init_caffemodel)
    hooks = CompressionHooks(solver.net).install(solver)

    history: List[Dict[str, float]] = []
    remaining = iters - solver.iter
    step = snapshot_every if snapshot_every else remaining
    while remaining > 0:
        n = min(step, remaining)
        h = solving.run(solver, n, test_iter, test_every=test_every, desc=desc, progress=progress)
        history.extend(h)
        remaining = iters - solver.iter
        if remaining > 0:
            hooks.sync_blobs()
            solver.snapshot()
            _prune_snapshots(prefix, keep=solver.iter)
    if not history:  # nothing to train (iters == 0 or already at the end)
        m = solving.test_net_metrics(solver.test_nets[0], test_iter)
        m["iter"] = solver.iter
        history.append(m)
    hooks.sync_blobs()
    solving.save_net(solver.net, final_caffemodel)
    _prune_snapshots(prefix, keep=None)
    return history


def _prune_snapshots(prefix: str, keep: Optional[int]) -> None:
    """Snapshots are only for resuming: keep the newest, drop the rest (all once finished)."""
    for p in glob.glob(prefix + "_iter_*"):
        m = re.search(r"_iter_(\d+)\.(solverstate|caffemodel)$", p)
        if m and (keep is None or int(m.group(1)) != keep):
            os.unlink(p)
