"""Stage ``test``: every model on the test split, each image exactly once, image by image.

Exact counts k/n with Wilson intervals, per-image correctness saved for the
paired comparisons (reference -> compressed, dense control -> compressed;
``test/NAME_correct.npy``, ``stats.pack_correct``, so that every comparison can
be recomputed from the run folder: tools/recheck_claims.py), the comparisons
at the run's non-inferiority margin, and a cross-check against ``caffe
test``'s figure for the decoded model.
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

from caffe_dc.algorithms import stats
from caffe_dc.base.errors import InternalError
from caffe_dc.base.fileio import atomic_path
from caffe_dc.pycaffe import solving
from caffe_dc.stages.run import Run, StageRecord

@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """Every model's exact count on the test split (``models``, by stage name) and the paired comparisons."""
    n: int
    models: Dict[str, dict]
    paired: Dict[str, dict]


def models(r: Run) -> list:
    """The models of the stages this one reads that made one, in table order (the control only when it ran)."""
    return [m for m in r.reads if r.done(m) and getattr(r.out(m), "caffemodel", None)
            and (m != "control" or r.opts.dense_control)]


def stage_inputs(r: Run) -> dict:
    return {"models": models(r), "margin_pp": r.opts.margin}


def margin(r: Run) -> float:
    """The non-inferiority margin (a fraction): ``--margin`` if given, else the rule on the reference's
    validation accuracy (``stats.default_margin``), known before the test split is read."""
    if r.opts.margin is not None:
        return r.opts.margin / 100.0
    return stats.default_margin(r.out("reference").accuracy)


def run_stage(r: Run) -> Record:
    _, n_test = r.info.split("test")
    out = {"n": n_test, "models": {}}
    per = {}
    for name in models(r):
        res = solving.score_exact(r.test_path, r.out(name).caffemodel, n_test)
        per[name] = res.pop("per_image")
        per5 = res.pop("per_image_top5", None)
        with atomic_path(r.folder("%s_correct.npy" % name)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, stats.pack_correct(per[name]))
        res["wilson"] = stats.wilson(res["correct"], res["n"])
        if per5 is not None:
            res["wilson_top5"] = stats.wilson(res["correct_top5"], res["n_top5"])
        out["models"][name] = res
        print("  %-9s %d/%d = %.2f%% (95%% CI %.2f-%.2f%%)" % (name, res["correct"], res["n"], 100 * res["accuracy"],
                                                              100 * res["wilson"][0], 100 * res["wilson"][1]))
    caffe_acc = r.out("caffe_test").accuracy
    if abs(caffe_acc - out["models"]["decode"]["accuracy"]) > 1e-4:
        raise InternalError("`caffe test` scored the decoded model %.6f but the exact count is %d/%d"
                            % (caffe_acc, out["models"]["decode"]["correct"], n_test))
    m = margin(r)
    out["paired"] = {"reference->compressed": stats.paired(per["reference"], per["decode"], margin=m)}
    if "control" in per:
        out["paired"]["control->compressed"] = stats.paired(per["control"], per["decode"], margin=m)
    for key, c in out["paired"].items():
        print("  %s: %+.2f pp (95%% CI %+.2f to %+.2f), %d vs %d discordant images, McNemar p = %.3g: %s"
              % (key, 100 * c["diff"], 100 * c["diff_low"], 100 * c["diff_high"], c["only_a"], c["only_b"],
                 c["mcnemar_p"], stats.claim(c)))
    return Record(**out)
