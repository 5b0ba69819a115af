"""Stage ``test``: every model on the test split, each image exactly once, image by image.

Exact counts k/n with Wilson intervals, per-image correctness saved for the
paired comparisons (reference -> compressed, dense control -> compressed),
and a cross-check against ``caffe test``'s figure for the decoded model.
"""
from __future__ import annotations

import numpy as np

from caffe_dc.algorithms import stats
from caffe_dc.base.errors import InternalError
from caffe_dc.pycaffe import solving
from caffe_dc.stages.run import Run

CANDIDATES = ("reference", "prune", "quantize", "decode", "control")


def models(r: Run) -> list:
    """The models this run has made, in table order (the control only when it ran)."""
    return [m for m in CANDIDATES if r.done(m) and (m != "control" or r.opts.dense_control)]


def stage_inputs(r: Run) -> dict:
    return {"models": models(r)}


def run_stage(r: Run) -> dict:
    _, n_test = r.info.split("test")
    out = {"n": n_test, "models": {}}
    per = {}
    for name in models(r):
        res = solving.score_exact(r.test_path, r.out(name)["caffemodel"], n_test)
        per[name] = res.pop("per_image")
        per5 = res.pop("per_image_top5", None)
        np.save(r.path("test", "%s_correct.npy" % name), np.packbits(per[name]))
        res["wilson"] = stats.wilson(res["correct"], res["n"])
        if per5 is not None:
            res["wilson_top5"] = stats.wilson(res["correct_top5"], res["n_top5"])
        out["models"][name] = res
        print("  %-9s %d/%d = %.2f%% (95%% CI %.2f-%.2f%%)" % (name, res["correct"], res["n"], 100 * res["accuracy"],
                                                              100 * res["wilson"][0], 100 * res["wilson"][1]))
    caffe_acc = r.out("caffe_test")["accuracy"]
    if abs(caffe_acc - out["models"]["decode"]["accuracy"]) > 1e-4:
        raise InternalError("`caffe test` scored the decoded model %.6f but the exact count is %d/%d"
                            % (caffe_acc, out["models"]["decode"]["correct"], n_test))
    out["paired"] = {"reference->compressed": stats.paired(per["reference"], per["decode"])}
    if "control" in per:
        out["paired"]["control->compressed"] = stats.paired(per["control"], per["decode"])
    for key, c in out["paired"].items():
        print("  %s: %+.2f pp (95%% CI %+.2f to %+.2f), %d vs %d discordant images, McNemar p = %.3g"
              % (key, 100 * c["diff"], 100 * c["diff_low"], 100 * c["diff_high"], c["only_a"], c["only_b"],
                 c["mcnemar_p"]))
    return out
