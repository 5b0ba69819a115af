"""The method's promises on real Caffe: a budget's rate is the file's, whatever layers it leaves dense."""
import json
import os

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from caffe_dc.algorithms.schedule import builtin  # noqa: E402
from caffe_dc.base.blobs import CODEBOOK, blob_name  # noqa: E402
from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import datasets  # noqa: E402
from conftest import quick_run_with  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")

RATE = 30.0


@pytest.fixture(scope="module")
def dense_layer_run(tmp_path_factory):
    """The quick preset with a 30x budget shared out by least summed drop: on the quick reference it keeps
    ip3 (1,000 weights, the steepest curve) dense and prunes ip1 and ip2 the harder."""
    root = tmp_path_factory.mktemp("dense_layer")
    with open(builtin("lenet-300-100", "quick")) as f:
        doc = json.load(f)
    del doc["densities"]
    doc["budget"] = {"target_rate": RATE, "allocation": "least_drop"}
    return quick_run_with(root, doc)[1]


def test_a_layer_the_budget_leaves_dense_is_quantized_and_the_rate_is_met(dense_layer_run):
    out = dense_layer_run
    state = json.load(open(str(out / "pipeline.json")))
    dense = [n for n, d in state["choose"]["final"].items() if d >= 1.0]
    assert dense, "the budget left no layer dense: the test no longer tests what it claims (%s)" % state["choose"]
    m = json.load(open(str(out / "metrics.json")))
    assert abs(m["compression"] / RATE - 1) <= 0.03, m["compression"]
    q = caffemodel.load_params(state["quantize"]["caffemodel"])
    decoded = caffemodel.load_params(state["decode"]["caffemodel"])
    storage = {r["name"]: r for r in json.load(open(str(out / "storage.json")))["layers"] if r["blob"] == 0}
    for n in dense:
        bits = state["quantize"]["bits"][n]
        assert bits == state["choose"]["schedule"]["bits"][n]   # at the bits the budget counted it with
        assert blob_name(n, CODEBOOK) in q
        assert storage[n]["kind"] == "quantized" and storage[n]["weight_bits"] == bits
        w = decoded[n].blobs[0]
        assert np.count_nonzero(w) == w.size and np.unique(w).size <= 2 ** bits


LOOP = {"max_drop_pp": 1.0, "max_rounds": 4}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    """The quick preset with an early-stopped reference (its kept model is the best of its evaluations) and a
    closed loop; snapshots every 100 iterations, so a fine-tuning killed midway resumes from one."""
    root = tmp_path_factory.mktemp("method_loop")
    with open(builtin("lenet-300-100", "quick")) as f:
        doc = json.load(f)
    doc.update(reference_iters=6000, reference_eval_every=250, reference_patience=2, snapshot_every=100,
               closed_loop=LOOP)
    return (root,) + quick_run_with(root, doc)


def test_the_loop_measures_against_the_references_last_evaluation(loop_run):
    _, _, out, p = loop_run
    state = json.load(open(str(out / "pipeline.json")))
    ref, loop = state["reference"], state["prune"]["closed_loop"]
    best = max(acc for _, acc in ref["evaluations"])
    assert ref["accuracy"] == best   # kept: the best of its evaluations
    assert ref["stopped_at"] > ref["best_iter"], "the reference stopped at its best: the test tests nothing (%s)" % ref
    figure = loop["reference_figure"]
    assert figure["accuracy"] == ref["evaluations"][-1][1] <= best and "last validation evaluation" in figure["what"]
    assert loop["reference_model_accuracy"] == pytest.approx(best)
    for r in state["prune"]["rounds"]:
        rm = json.load(open(str(out / "prune" / ("round%d" % r["round"]) / "metrics.json")))
        assert rm["reference_accuracy"] == figure["accuracy"]
        assert r["measured_drop_pp"] == pytest.approx(100 * (figure["accuracy"] - r["accuracy"]), abs=1e-4)
    assert "judged by the upper bound of its 95% paired interval" in (out / "report.md").read_text()


def test_the_loop_holds_a_round_by_the_bound_of_its_paired_validation_interval(loop_run):
    from caffe_dc.algorithms import stats
    from caffe_dc.pycaffe import solving

    _, _, out, _ = loop_run
    state = json.load(open(str(out / "pipeline.json")))
    n_val = json.load(open(str(out / "metrics.json")))["data"]["n_val"]
    ref = solving.score_exact(str(out / "prune" / "base_train_val.prototxt"), state["reference"]["caffemodel"], n_val)
    for r in state["prune"]["rounds"]:
        rdir = out / "prune" / ("round%d" % r["round"])
        got = solving.score_exact(str(rdir / "train_val.prototxt"), str(rdir / "retrained.caffemodel"), n_val)
        cmp = stats.paired(ref["per_image"], got["per_image"], margin=LOOP["max_drop_pp"] / 100)
        rec = json.load(open(str(rdir / "metrics.json")))["paired_vs_reference"]
        assert (rec["n"], rec["only_a"], rec["only_b"]) == (n_val, cmp["only_a"], cmp["only_b"])
        assert r["drop_bound_pp"] == pytest.approx(r["measured_drop_pp"] + 100 * (cmp["diff"] - cmp["diff_low"]))
        assert r["held"] == (r["drop_bound_pp"] <= LOOP["max_drop_pp"])
        if cmp["only_a"] + cmp["only_b"]:
            assert r["drop_bound_pp"] > r["measured_drop_pp"]


def test_the_fine_tuning_keeps_its_best_validation_evaluation(loop_run):
    from caffe_dc.pycaffe import solving
    from caffe_dc.stages.quantize import FINETUNE_EVALS

    _, _, out, _ = loop_run
    state = json.load(open(str(out / "pipeline.json")))
    q = state["quantize"]
    hist = json.load(open(str(out / "quantize" / "metrics.json")))["history"]
    evals = [(0, q["accuracy_before_finetune"])] + [(h["iter"], h["accuracy"]) for h in hist]
    assert len(hist) == FINETUNE_EVALS and q["accuracy_last"] == hist[-1]["accuracy"]
    best_acc = max(a for _, a in evals)
    assert q["accuracy"] == pytest.approx(best_acc) and q["best_iter"] == next(i for i, a in evals if a == best_acc)
    n_val = json.load(open(str(out / "metrics.json")))["data"]["n_val"]
    kept = solving.score_exact(q["prototxt"], q["caffemodel"], n_val)   # the file is the model of that evaluation
    assert kept["accuracy"] == pytest.approx(q["accuracy"], abs=0.5 / n_val)


def test_a_fine_tuning_killed_midway_resumes_to_the_same_file(loop_run, tmp_path, monkeypatch):
    """Killed in the fine-tuning's sixth piece (after the snapshot at 200 and a saved best): the rerun resumes
    and ends in the very model.dcz of the run that was never killed."""
    from caffe_dc.pipeline.reproduce import Pipeline
    from caffe_dc.pycaffe import solving
    from caffe_dc.stages.run import DataOptions, RunOptions

    root, sched, out, _ = loop_run
    first = json.load(open(str(out / "pipeline.json")))
    opts = RunOptions(net="lenet-300-100", quick=True, schedule=str(sched), out=str(tmp_path / "run"),
                      data=DataOptions(data="fashion-mnist", data_root=str(root / "data")))
    real_run, pieces = solving.run, []

    def run(*a, **k):
        if k.get("desc") == "quantize":
            pieces.append(a[0].iter)   # the solver's iteration where the piece starts
            if len(pieces) == 6:
                raise KeyboardInterrupt
        return real_run(*a, **k)

    monkeypatch.setattr(solving, "run", run)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(opts, progress=False).run()
    assert os.path.isfile(str(tmp_path / "run" / "quantize" / "retrain" / "snap_iter_200.solverstate"))
    Pipeline(opts, progress=False).run()
    assert pieces[6] == 200    # resumed from the snapshot, not from the start
    again = json.load(open(str(tmp_path / "run" / "pipeline.json")))
    assert again["quantize"]["best_iter"] == first["quantize"]["best_iter"]
    assert (tmp_path / "run" / "model.dcz").read_bytes() == (out / "model.dcz").read_bytes()
