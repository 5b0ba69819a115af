"""Reference training of a net through pycaffe (the model that gets compressed)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Optional

from caffe_dc.pycaffe import nets
from caffe_dc.pycaffe import retraining
from caffe_dc.pycaffe import solving
from caffe_dc.base import provenance
from caffe_dc.base.fileio import atomic_path, atomic_write
from caffe_dc.pycaffe.caffemodel import load_params, save_net_proto
from caffe_dc.base.fingerprint import file_digest
from caffe_dc.stages.run import Run
from caffe_dc.pycaffe.datasets import DataInfo  # noqa: F401 (type of ``info``)


def train_reference(net_name: str, info: DataInfo, out_dir: str, iters: Optional[int] = None,
                    seed: int = 1, test_every: int = 0, progress: bool = True, verbose: bool = False,
                    batch: Optional[int] = None, test_batch: Optional[int] = None, base_lr: Optional[float] = None,
                    snapshot_every: Optional[int] = None) -> dict:
    """Train ``net_name`` from scratch on ``info``; write caffemodel + metrics.json in ``out_dir``."""
    spec = nets.get(net_name)
    os.makedirs(out_dir, exist_ok=True)
    # Tested on the validation split while training: the test split is kept for the final figures.
    eval_lmdb, n_eval = info.split("val")
    net_param = nets.train_val_with_sources(spec.name, info.train_lmdb, eval_lmdb, batch=batch, test_batch=test_batch,
                                            n_test=n_eval)
    tv_path = os.path.join(out_dir, "train_val.prototxt")
    save_net_proto(net_param, tv_path)
    titer = solving.test_iters_for(net_param, n_eval)
    overrides = dict(test_iter=titer, random_seed=seed)
    if iters is not None:
        overrides["max_iter"] = iters
    if base_lr is not None:
        overrides["base_lr"] = base_lr
    sp = nets.solver_for(spec.name, tv_path, os.path.join(out_dir, "snap"), **overrides)
    caffe = solving.import_caffe(verbose)
    t0 = time.time()
    model = os.path.join(out_dir, "%s.caffemodel" % spec.name)
    # The solver's own snapshot interval becomes the resume point: a rerun after a kill goes on
    # from the newest snapshot rather than from iteration 0.
    history = retraining.retrain(tv_path, sp, None, out_dir, sp.max_iter, titer, model,
                                 desc="train %s" % spec.name, snapshot_every=snapshot_every or sp.snapshot or 1000,
                                 test_every=test_every, progress=progress, verbose=verbose)
    final = history[-1]
    metrics = {
        "net": spec.name, "dataset": info.name, "iters": sp.max_iter, "seed": seed,
        "accuracy": solving.accuracy_of(final), "test": final, "history": history,
        "train_seconds": time.time() - t0, "caffemodel": model,
        "command": " ".join(["caffe-dc"] + sys.argv[1:]),
        "environment": environment(caffe),
    }
    atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2).encode())
    return metrics


def environment(caffe=None) -> dict:
    """``base.provenance.environment()``; kept for callers that still pass the caffe module (it is found anyway)."""
    return provenance.environment()


# ---------------------------------------------------------------- the pipeline's stage

def stage_inputs(r: Run) -> dict:
    return {"ref_iters": r.ref_iters, "seed": r.opts.seed, "snapshot_every": r.snapshot_every,
            "weights": file_digest(r.opts.weights) if r.opts.weights else None}


def run_stage(r: Run) -> dict:
    """The reference: ``--weights`` copied in and scored on the validation split, or trained here."""
    model = r.path("reference", "%s.caffemodel" % r.src.file_stem)
    given = r.opts.weights
    if given:
        solving.check_matches(r.src.train_val, load_params(given), given)
        os.makedirs(os.path.dirname(model), exist_ok=True)
        with atomic_path(model) as tmp:
            shutil.copyfile(given, tmp)
        m = solving.evaluate(r.base_path, model, r.test_iter)
        print("  reference val accuracy %.2f%% (given weights)" % (100 * solving.accuracy_of(m)))
        return {"caffemodel": model, "accuracy": solving.accuracy_of(m), "accuracy_top5": m.get("accuracy_top5"),
                "iters": 0, "source": given}
    m = train_reference(r.src.name, r.info, r.path("reference"), iters=r.ref_iters, seed=r.opts.seed,
                        test_every=max(r.ref_iters // 5, 1), progress=r.progress)
    print("  reference val accuracy %.2f%% after %d iterations" % (100 * m["accuracy"], m["iters"]))
    return {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "iters": m["iters"]}
