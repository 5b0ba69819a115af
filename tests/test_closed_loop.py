"""A closed-loop prune schedule on real Caffe: LeNet-300-100 on the quick data, rounds re-planned from
measured validation accuracy, recorded planned against measured, and a killed run resumed to the same bytes."""
import json
import os

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from caffe_dc.algorithms import prune_plan  # noqa: E402
from caffe_dc.algorithms import schedule as schedules  # noqa: E402
from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import datasets  # noqa: E402
from conftest import killed_in_chunk, quick_run_with  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")

LOOP = {"max_drop_pp": 0.3, "max_rounds": 4}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("closed_loop")
    doc = schedules.read_document(schedules.builtin("lenet-300-100", "quick"))
    doc.update(iters_per_round=200, snapshot_every=100, finetune_iters=100, reference_iters=1000, closed_loop=LOOP)
    sched, out, p = quick_run_with(root, doc)
    return root, sched, out, doc, p


def test_rounds_are_replanned_and_recorded_planned_against_measured(loop_run):
    root, _, out, doc, p = loop_run
    state = json.load(open(str(out / "pipeline.json")))
    prune = state["prune"]
    rounds, loop = prune["rounds"], prune["closed_loop"]
    # a fixed-length reference was not chosen on validation: its own figure is the unbiased one, and recorded
    ref_acc = loop["reference_figure"]["accuracy"]
    assert ref_acc == state["reference"]["accuracy"] and "not chosen on validation" in loop["reference_figure"]["what"]
    assert 1 <= len(rounds) == loop["rounds_run"] <= LOOP["max_rounds"]
    assert loop["max_drop_pp"] == LOOP["max_drop_pp"] and loop["stopped"] in ("target", "cap", "min_step")
    targets = doc["densities"]
    n = {"ip1": 784 * 300, "ip2": 300 * 100, "ip3": 100 * 10}
    total = sum(n.values())
    # round 1 is the open loop's first geometric step; every later one follows from the drops measured
    first = prune_plan.densities_at(targets, 0.5)
    assert rounds[0]["planned_density"] == pytest.approx(sum(first[k] * n[k] for k in n) / total)
    drops = [r["drop_bound_pp"] for r in rounds]
    replay = prune_plan.plan(targets, 2, prune_plan.Settings(**LOOP), drops)
    assert replay.next is None and replay.held_round == loop["held_round"] and replay.stopped == loop["stopped"]
    for r, t in zip(rounds, replay.tried):
        assert r["measured_drop_pp"] == pytest.approx(100 * (ref_acc - r["accuracy"]))
        assert r["drop_bound_pp"] >= r["measured_drop_pp"]    # judged by the bound, not the point
        assert r["held"] == (r["drop_bound_pp"] <= LOOP["max_drop_pp"]) == t["held"]
        assert r["start_round"] == t["start_round"] and r["planned_drop_pp"] == pytest.approx(t["planned_drop_pp"])
        assert abs(r["density"] - r["planned_density"]) < 1e-3     # the masks reach what was planned
        on_disk = json.load(open(str(out / "prune" / ("round%d" % r["round"]) / "metrics.json")))
        assert on_disk["drop_bound_pp"] == r["drop_bound_pp"] and on_disk["progress"] == t["progress"]
    # the file holds the last round that held: the targets, or the densities reached when the loop stopped short
    params = caffemodel.load_params(prune["caffemodel"])
    nz = sum(int(np.count_nonzero(params[k].blobs[0])) for k in n) / total
    assert nz == pytest.approx(prune["density"], abs=1e-6)
    if loop["held_round"]:
        kept = rounds[loop["held_round"] - 1]
        assert prune["density"] == kept["density"] and prune["accuracy"] == kept["accuracy"]
    if loop["reached_targets"]:
        assert loop["stopped"] == "target"
        assert prune["density"] == pytest.approx(sum(targets[k] * n[k] for k in n) / total, abs=1e-4)
    table = prune_plan.rounds_table(rounds).splitlines()
    assert len(table) == 2 + len(rounds) and "closed loop: stopped (%s)" % loop["stopped"] in p.stdout
    print("closed loop:", loop, "\n" + "\n".join(table))


def test_killed_closed_loop_resumes_to_the_same_bytes(loop_run, tmp_path, monkeypatch):
    """Killed in round 2's retraining, after its snapshot: the rerun replays round 1's measured drop to the
    same plan, resumes round 2 and ends in the very files of the run that was never killed."""
    from caffe_dc.pipeline.reproduce import Pipeline
    from caffe_dc.stages.run import DataOptions, RunOptions

    root, sched, out, _, _ = loop_run
    ref = str(out / "reference" / "lenet-300-100.caffemodel")
    opts = RunOptions(net="lenet-300-100", quick=True, schedule=str(sched), weights=ref, out=str(tmp_path / "run"),
                      data=DataOptions(data="fashion-mnist", data_root=str(root / "data")))
    calls = killed_in_chunk(monkeypatch, 4)   # round 1: 2 pieces of 100; round 2's second piece
    with pytest.raises(KeyboardInterrupt):
        Pipeline(opts, progress=False).run()
    assert calls == ["prune round 1", "prune round 1", "prune round 2", "prune round 2"]
    assert os.path.isfile(str(tmp_path / "run" / "prune" / "round2" / "retrain" / "snap_iter_100.solverstate"))
    Pipeline(opts, progress=False).run()
    assert calls[4] == "prune round 2"
    first = json.load(open(str(out / "pipeline.json")))["prune"]
    again = json.load(open(str(tmp_path / "run" / "pipeline.json")))["prune"]
    assert again["rounds"] == first["rounds"]
    # the same reference, given this time: the same figure, named for how it came
    figures = [r["closed_loop"].pop("reference_figure") for r in (first, again)]
    assert again["closed_loop"] == first["closed_loop"] and figures[0]["accuracy"] == figures[1]["accuracy"]
    for f in ["prune/pruned.caffemodel", "model.dcz"] + ["prune/round%d/retrained.caffemodel" % r["round"]
                                                         for r in first["rounds"]]:
        with open(str(out / f), "rb") as a, open(str(tmp_path / "run" / f), "rb") as b:
            assert a.read() == b.read(), f
