"""The reference trained until validation accuracy stops improving (early stopping), resumable after a kill."""
import json
import os

import pytest

from caffe_dc.algorithms import schedule as S
from caffe_dc.algorithms.early_stopping import CAP, PATIENCE, EarlyStopping, stopping_point
from caffe_dc.base.errors import InputError
from conftest import assert_clean_error, killed_in_chunk, run_cli

LENET_300 = ["ip1", "ip2", "ip3"]


# ------------------------------------------------------------------ the rule, on made-up accuracy curves

def curve(*accs, every=100):
    return [(every * (i + 1), a) for i, a in enumerate(accs)]


def test_stops_after_patience_evaluations_without_a_new_best():
    rule = EarlyStopping(eval_every=100, patience=3, max_iters=10000)
    d = stopping_point(curve(0.5, 0.7, 0.8, 0.79, 0.8, 0.78, 0.95), rule)
    # the best is at 300; 400, 500 (a tie is no progress) and 600 fail to beat it: stop at 600,
    # so the later 0.95 is never seen
    assert (d.stop, d.reason, d.best_iter, d.best, d.last_iter, d.since_best) == (True, PATIENCE, 300, 0.8, 600, 3)


def test_a_new_best_restarts_the_count():
    rule = EarlyStopping(eval_every=100, patience=2, max_iters=10000)
    d = stopping_point(curve(0.5, 0.4, 0.6, 0.55, 0.61, 0.6, 0.6, 0.9), rule)
    assert (d.reason, d.best_iter, d.last_iter) == (PATIENCE, 500, 700)
    # one evaluation short of the patience goes on
    assert not rule.decide(curve(0.5, 0.4, 0.6, 0.55, 0.61, 0.6)).stop


def test_the_cap_stops_a_curve_that_keeps_improving_and_keeps_its_best():
    rule = EarlyStopping(eval_every=100, patience=2, max_iters=500)
    d = stopping_point(curve(0.1, 0.2, 0.3, 0.4, 0.5, 0.6), rule)
    assert (d.stop, d.reason, d.best_iter, d.last_iter) == (True, CAP, 500, 500)
    # the cap with the best earlier: the best is still what is kept
    d = stopping_point(curve(0.1, 0.5, 0.4, 0.45, 0.3), EarlyStopping(100, 5, 500))
    assert (d.reason, d.best_iter) == (CAP, 200)


def test_eval_points_end_at_the_cap_and_bad_settings_are_refused():
    assert EarlyStopping(300, 2, 1000).eval_iters() == (300, 600, 900, 1000)
    assert EarlyStopping(5000, 2, 1000).eval_iters() == (1000,)
    assert not EarlyStopping(100, 2, 1000).decide([]).stop
    with pytest.raises(InputError, match="patience must be an integer >= 1"):
        EarlyStopping(100, 0, 1000).check()


def test_the_decision_is_a_function_of_the_evaluations_alone():
    """What makes a resumed run stop where an unkilled one did: deciding again from a prefix of the
    evaluations gives what was decided then."""
    rule = EarlyStopping(eval_every=100, patience=3, max_iters=3000)
    accs = curve(0.3, 0.5, 0.45, 0.6, 0.6, 0.62, 0.61, 0.6, 0.59, 0.7)
    online = []
    for n in range(1, len(accs) + 1):
        online.append(rule.decide(accs[:n]))
        if online[-1].stop:
            break
    assert [d.stop for d in online].index(True) == len(online) - 1 == 8
    assert online[-1].best_iter == 600


# ------------------------------------------------------------------ schedule keys

def quick_doc(**extra):
    with open(S.builtin("lenet-300-100", "quick")) as f:
        doc = json.load(f)
    doc.update(extra)
    return doc


def test_schedule_keys_round_trip_and_fixed_length_stays_as_it_was(tmp_path):
    s = S.from_dict(quick_doc(reference_iters=6000, reference_eval_every=500, reference_patience=4), LENET_300)
    assert s.reference_rule() == EarlyStopping(500, 4, 6000)
    again = S.load_schedule(S.save_schedule(s, str(tmp_path / "s.json")), LENET_300)
    assert again.reference_rule() == s.reference_rule()
    plain = S.load_schedule(S.builtin("lenet-300-100", "quick"), LENET_300)
    assert plain.reference_rule() is None and plain.reference_iters == 2000
    assert "reference_eval_every" not in plain.to_dict()


@pytest.mark.parametrize("net", ["lenet-300-100", "lenet-5"])
def test_full_presets_train_the_reference_by_a_decaying_recipe_and_quick_ones_do_not(net):
    from caffe_dc.base.paper import PAPER_DENSITY
    layers = {n: "Convolution" if n.startswith("conv") else "InnerProduct" for n in PAPER_DENSITY[net]}
    full = S.load_schedule(S.builtin(net, "full"), layers)
    # a learning-rate recipe that ends an order of magnitude or more below where it starts, far from the start
    recipe = full.reference_solver
    assert recipe["lr_policy"] == "multistep" and recipe["gamma"] ** len(recipe["stepvalue"]) <= 0.01 + 1e-12
    assert recipe["stepvalue"][-1] < full.reference_iters
    assert full.reference_rule() is None
    quick = S.load_schedule(S.builtin(net, "quick"), layers)
    assert quick.reference_rule() is None and quick.reference_solver is None


@pytest.mark.parametrize("extra, message", [
    (dict(reference_eval_every=500), "go together (early stopping); reference_patience is missing"),
    (dict(reference_patience=3), "reference_patience go together (early stopping); reference_eval_every is missing"),
    (dict(reference_eval_every=0, reference_patience=3), "reference_eval_every must be an integer in 1..2147483647, got 0"),
    (dict(reference_eval_every=100, reference_patience=2.5), "reference_patience must be an integer, got 2.5"),
    (dict(reference_eval_every=100, reference_patience=True), "reference_patience must be an integer, got True"),
    (dict(reference_eval_every=100, reference_patience=2, reference_iters=0), "needs reference_iters >= 1"),
])
def test_bad_early_stopping_keys_are_one_line_errors(extra, message):
    doc = quick_doc(**extra)
    with pytest.raises(InputError) as e:
        S.from_dict(doc, LENET_300, where="s.json")
    text = str(e.value)
    assert "\n" not in text and text.startswith("s.json: ")
    assert message in text


def test_early_stopping_without_a_cap_is_refused():
    doc = quick_doc(reference_eval_every=100, reference_patience=2)
    del doc["reference_iters"]
    with pytest.raises(InputError, match="early stopping needs reference_iters >= 1, the cap"):
        S.from_dict(doc, LENET_300)


def test_bad_schedule_on_the_command_line_is_one_line(tmp_path):
    pytest.importorskip("caffe")
    p = tmp_path / "s.json"
    p.write_text(json.dumps(quick_doc(reference_eval_every=-5, reference_patience=2)))
    assert_clean_error(run_cli("reproduce", "lenet-300-100", "--schedule", p, "--out", tmp_path / "run",
                               "--data", "fashion-mnist", "--data-root", tmp_path / "data", "--limit", 1000),
                       "reference_eval_every must be an integer in 1..2147483647, got -5")


# ------------------------------------------------------------------ real training (Caffe)

RULE = EarlyStopping(eval_every=20, patience=3, max_iters=3000)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    pytest.importorskip("caffe")
    from caffe_dc.pycaffe import datasets
    if not os.path.isdir(datasets.FASHION_MNIST_DIR):
        pytest.skip("needs dataset-fashion-mnist")
    root = tmp_path_factory.mktemp("conv")
    return root, datasets.prepare(data="fashion-mnist", out_root=str(root / "data"), quiet=True,
                                      limit=1000)


@pytest.fixture(scope="module")
def straight(small_data):
    from caffe_dc.stages import reference
    root, info = small_data
    return reference.train_reference("lenet-300-100", info, str(root / "straight"), snapshot_every=40,
                                     progress=False, rule=RULE)


def test_a_real_reference_stops_early_at_its_best_and_records_where(straight):
    from caffe_dc.pycaffe import solving
    m = straight
    evals = m["evaluations"]
    assert m["stop_reason"] == PATIENCE and m["stopped_at"] < RULE.max_iters
    assert [e[0] for e in evals] == list(range(20, m["stopped_at"] + 1, 20))
    best = max(evals, key=lambda e: e[1])
    assert m["best_iter"] == min(e[0] for e in evals if e[1] == best[1])        # the first of equal bests
    assert m["stopped_at"] == m["best_iter"] + RULE.patience * RULE.eval_every
    assert m["accuracy"] == best[1] and m["iters"] == m["best_iter"] and m["rule"] == RULE.describe()
    out = os.path.dirname(m["caffemodel"])
    assert sorted(os.listdir(out)) == ["lenet-300-100.caffemodel", "metrics.json", "solver.prototxt",
                                      "train_val.prototxt"]
    # the model kept is the best one: scored again on the validation split it gives the best's accuracy
    again = solving.evaluate(os.path.join(out, "train_val.prototxt"), m["caffemodel"], _test_iter(m))
    assert abs(solving.accuracy_of(again) - m["accuracy"]) < 1e-6
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["evaluations"] == evals


def _test_iter(m):
    """The TEST iterations the training evaluated with (from the solver it wrote)."""
    import re
    with open(os.path.join(os.path.dirname(m["caffemodel"]), "solver.prototxt")) as f:
        return int(re.search(r"test_iter: (\d+)", f.read()).group(1))


def test_killed_and_resumed_it_stops_at_the_same_iteration_with_the_same_bytes(straight, small_data, monkeypatch):
    from caffe_dc.stages import reference
    root, info = small_data
    pieces = straight["stopped_at"] // RULE.eval_every
    assert pieces >= 3   # a snapshot (every 40 iterations) comes before the last piece
    out = root / "killed"
    calls = killed_in_chunk(monkeypatch, pieces)            # killed in the piece that would decide to stop
    with pytest.raises(KeyboardInterrupt):
        reference.train_reference("lenet-300-100", info, str(out), snapshot_every=40, progress=False, rule=RULE)
    snap = (pieces - 1) * RULE.eval_every // 40 * 40
    assert sorted(p.name for p in out.glob("snap_iter_*")) == ["snap_iter_%d.caffemodel" % snap,
                                                                "snap_iter_%d.solverstate" % snap]
    assert os.path.isfile(str(out / ("best_iter_%d.caffemodel" % straight["best_iter"])))
    resumed = reference.train_reference("lenet-300-100", info, str(out), snapshot_every=40, progress=False, rule=RULE)
    assert len(calls) == pieces + (straight["stopped_at"] - snap) // RULE.eval_every
    for k in ("stopped_at", "best_iter", "evaluations", "accuracy"):
        assert resumed[k] == straight[k], k
    with open(straight["caffemodel"], "rb") as a, open(resumed["caffemodel"], "rb") as b:
        assert a.read() == b.read()
    assert not list(out.glob("best_iter_*")) and not list(out.glob("snap_iter_*"))


def test_the_reference_stage_trains_by_the_rule_and_reruns_when_it_changes(tmp_path, small_data):
    from caffe_dc.pipeline.reproduce import Pipeline
    from caffe_dc.stages import reference
    from caffe_dc.stages.run import DataOptions, RunOptions
    root, _ = small_data
    sched = tmp_path / "s.json"
    sched.write_text(json.dumps(quick_doc(reference_iters=3000, reference_eval_every=20, reference_patience=3,
                                          snapshot_every=40)))
    data = DataOptions(data="fashion-mnist", data_root=str(root / "data"), limit=1000)
    r = Pipeline(RunOptions(net="lenet-300-100", schedule=str(sched), data=data, out=str(tmp_path / "run")),
                 progress=False).prepare().for_stage("reference", ("data",))
    assert reference.stage_inputs(r)["ref_early_stopping"] == RULE.to_dict()
    out = reference.run_stage(r)
    assert out.stop_reason == PATIENCE and out.best_iter < out.stopped_at < 3000
    assert out.iters == out.best_iter and out.rule == RULE.describe()
    assert os.path.isfile(out.caffemodel)
    fixed = Pipeline(RunOptions(net="lenet-300-100", quick=True, data=data, out=str(tmp_path / "q")),
                     progress=False).prepare()
    assert "ref_early_stopping" not in reference.stage_inputs(fixed)


def test_reference_anneal_goes_with_the_rule():
    from caffe_dc.algorithms import schedule as sch

    base = {"rounds": 1, "iters_per_round": 1, "finetune_iters": 1, "lr_factor": 0.1, "densities": {"ip1": 0.5},
            "reference_iters": 100}
    s = sch.from_dict(dict(base, reference_eval_every=10, reference_patience=2, reference_anneal=True), ["ip1"])
    assert s.reference_anneal and sch.from_dict(s.to_dict(), ["ip1"]).reference_anneal
    assert not sch.from_dict(base, ["ip1"]).reference_anneal
    with pytest.raises(InputError, match="needs the early-stopping rule"):
        sch.from_dict(dict(base, reference_anneal=True), ["ip1"])
    with pytest.raises(InputError, match="true or false"):
        sch.from_dict(dict(base, reference_eval_every=10, reference_patience=2, reference_anneal="yes"), ["ip1"])


def test_the_full_presets_are_budgets():
    from caffe_dc.algorithms import schedule as sch

    fc, conv = "InnerProduct", "Convolution"
    for net, layers in (("lenet-300-100", {"ip1": fc, "ip2": fc, "ip3": fc}),
                        ("lenet-5", {"conv1": conv, "conv2": conv, "ip1": fc, "ip2": fc})):
        s = sch.load_schedule(sch.builtin(net, "full"), layers)
        assert s.budget["target_rate"] > 1 and not s.densities
        assert s.reference_rule() is None and s.reference_solver and s.closed_loop
        # the bits chosen on the validation split, by kind (LeNet-5: 5 everywhere, LeNet-300-100: 4)
        assert s.bits == {n: 5 if net == "lenet-5" else 4 for n in layers}


RECIPE = {"base_lr": 0.05, "lr_policy": "multistep", "gamma": 0.1, "stepvalue": [20, 30]}


def test_reference_solver_round_trips_and_changes_the_reference_stage_inputs(tmp_path):
    s = S.from_dict(quick_doc(reference_iters=40, reference_solver=RECIPE), LENET_300)
    assert s.reference_solver == {"base_lr": 0.05, "lr_policy": "multistep", "gamma": 0.1, "stepvalue": [20, 30]}
    again = S.load_schedule(S.save_schedule(s, str(tmp_path / "s.json")), LENET_300)
    assert again.reference_solver == s.reference_solver
    assert S.from_dict(quick_doc(), LENET_300).reference_solver is None
    assert "reference_solver" not in S.from_dict(quick_doc(), LENET_300).to_dict()


@pytest.mark.parametrize("recipe, message", [
    ({}, "reference_solver must be an object of solver fields"),
    ({"base_lr": 0.05, "max_iter": 10}, "reference_solver must be an object of solver fields"),
    ({"lr_policy": "cosine"}, "reference_solver.lr_policy must be one of"),
    ({"lr_policy": "multistep"}, "lr_policy multistep needs stepvalue"),
    ({"stepvalue": [30, 20]}, "reference_solver.stepvalue must be increasing"),
    ({"stepvalue": 20}, "reference_solver.stepvalue must be an integer, got None"),
    ({"base_lr": 0}, "reference_solver.base_lr must be > 0"),
    ({"base_lr": float("nan")}, "reference_solver.base_lr must be a finite number"),
    ({"gamma": True}, "reference_solver.gamma must be a number, got True"),
])
def test_bad_reference_solver_is_one_error(recipe, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        S.from_dict(quick_doc(reference_iters=40, reference_solver=recipe), LENET_300)


def test_a_reference_trains_with_the_schedules_solver_fields(small_data):
    from caffe_dc.pycaffe.caffemodel import load_solver_proto
    from caffe_dc.stages import reference
    root, info = small_data
    m = reference.train_reference("lenet-300-100", info, str(root / "recipe"), iters=40, progress=False,
                                  solver_fields=S.from_dict(quick_doc(reference_iters=40, reference_solver=RECIPE),
                                                            LENET_300).reference_solver)
    sp = load_solver_proto(os.path.join(os.path.dirname(m["caffemodel"]), "solver.prototxt"))
    assert sp.base_lr == pytest.approx(0.05) and (sp.lr_policy, list(sp.stepvalue), sp.max_iter) == ("multistep", [20, 30], 40)
    assert m["iters"] == 40
