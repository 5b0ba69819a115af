"""Sensitivity analysis, the density chooser and schedule files.

The chooser and the schedule format are pure and run on synthetic curves
anywhere; the measurement runs a tiny real net in the image and checks each
count against Caffe's own Accuracy layer on a separately saved model.
"""
import json
import math
import os

import numpy as np
import pytest

from caffe_dc.algorithms import schedule as S
from caffe_dc.algorithms import sensitivity as sens
from caffe_dc.algorithms.pruning import iterative_schedule
from caffe_dc.base.errors import InputError
from conftest import assert_clean_error, run_cli

GRID = np.array(sorted(sens.DEFAULT_GRID))   # ascending, ends at 1.0


def curve(name, kind, weights, drop_fn, base=0.9):
    """A curve whose accuracy is base - drop_fn(density)."""
    return sens.Curve(name, kind, weights, GRID.copy(), base - np.array([drop_fn(d) for d in GRID]))


def knee(at, steep):
    """No drop down to ``at``, then ``steep`` per e-fold of pruning below it."""
    return lambda d: 0.0 if d >= at else steep * math.log(at / d)


ROBUST = curve("ip1", "fc", 400000, knee(0.1, 0.05))
SENSITIVE = curve("conv1", "conv", 500, knee(0.6, 0.05))
FLAT = curve("ip2", "fc", 5000, lambda d: 0.0)


# ------------------------------------------------------------------ chooser


def test_drop_curve_is_a_monotone_envelope():
    acc = np.array([0.50, 0.80, 0.70, 0.85, 0.88, 0.90])   # a sparser point that looks better: noise
    c = sens.Curve("x", "fc", 10, np.array([0.01, 0.05, 0.1, 0.3, 0.6, 1.0]), acc)
    # 0.05 looks better than 0.1: skipped, read on the straight line from 0.1 (0.20) to 0.01 (0.40)
    between = 0.20 + 0.20 * math.log(0.1 / 0.05) / math.log(0.1 / 0.01)
    np.testing.assert_allclose(sens.drop_curve(c, 0.90), [0.40, between, 0.20, 0.05, 0.02, 0.0])
    # no flat step for a budget to jump across: strictly rising where the measurements were not
    assert sens.density_for_drop(c, 0.90, 0.23) > 0.05
    # better than dense counts as no drop, not a gain
    up = c._replace(accuracy=np.array([0.5, 0.8, 0.7, 0.85, 0.95, 0.90]))
    assert sens.drop_curve(up, 0.90)[-2] == 0.0


def test_max_drop_reads_the_crossing_between_grid_points():
    # drop = 0.05 * ln(0.1 / d) below 0.1: a 1-point drop is reached at d = 0.1 * exp(-0.2)
    d = sens.density_for_drop(ROBUST, 0.9, 0.01)
    grid_below = GRID[GRID <= 0.1]
    assert grid_below.min() < d < 0.1
    # linear in log-density between grid points, so the exact crossing when it falls on a segment
    lo, hi = GRID[GRID < d].max(), GRID[GRID > d].min()
    t = (math.log(d) - math.log(lo)) / (math.log(hi) - math.log(lo))
    assert abs((1 - t) * knee(0.1, 0.05)(lo) + t * knee(0.1, 0.05)(hi) - 0.01) < 1e-9
    assert sens.density_for_drop(ROBUST, 0.9, 0.0) == pytest.approx(0.1)
    assert sens.density_for_drop(FLAT, 0.9, 0.0) == GRID[0]        # never below the grid
    assert sens.density_for_drop(SENSITIVE, 0.9, 1.0) == GRID[0]


def test_sensitive_layers_keep_more():
    got = sens.choose_max_drop(0.9, [ROBUST, SENSITIVE, FLAT], 0.005)
    assert got["conv1"] > 0.5 > 0.1 > got["ip1"] >= got["ip2"] == GRID[0]
    for c in (ROBUST, SENSITIVE):
        assert float(sens.drop_at(c, 0.9, got[c.name])) <= 0.005 + 1e-12
    with pytest.raises(InputError):
        sens.choose_max_drop(0.9, [ROBUST], -1)


def test_target_rate_is_met_with_the_smallest_shared_budget():
    curves = [ROBUST, SENSITIVE, curve("ip2", "fc", 5000, knee(0.2, 0.05))]
    bits = sens.default_bits(curves)
    assert bits == {"ip1": 5, "conv1": 8, "ip2": 5}
    final = sens.choose_target_rate(0.9, curves, 40, bits)
    rate = sens.estimated_rate(curves, final, bits)
    assert 40 <= rate < 40.5
    # a slightly smaller budget misses the target: the budget found is the smallest
    budget = max(float(sens.drop_at(c, 0.9, final[c.name])) for c in curves)
    tighter = sens.choose_max_drop(0.9, curves, budget * 0.99)
    assert sens.estimated_rate(curves, tighter, bits) < 40
    with pytest.raises(InputError, match="out of reach"):
        sens.choose_target_rate(0.9, curves, 5000, bits)


def test_rate_estimate_counts_codes_indices_fillers_and_codebooks():
    c = sens.Curve("ip1", "fc", 100000, GRID, GRID)
    # density 0.5: fillers are negligible (0.5**32); 100000 * 32 / (50000 * (5 + 5) + 32 * 32)
    assert sens.estimated_rate([c], {"ip1": 0.5}, {"ip1": 5}) == pytest.approx(3.2e6 / (5e5 + 1024), rel=1e-6)
    # density 0.02: gaps beyond 32 need fillers, so the rate falls short of the filler-free figure
    no_fill = 3.2e6 / (2000 * 10 + 1024)
    assert sens.estimated_rate([c], {"ip1": 0.02}, {"ip1": 5}) < no_fill * 0.7


def test_rounds_keep_each_rounds_drop_small_and_step_finely_where_steep():
    curves = [ROBUST, SENSITIVE, FLAT]
    final = {"ip1": 0.04, "conv1": 0.4, "ip2": 0.05}
    plan = sens.plan_rounds(0.9, curves, final, round_drop=0.01, min_rounds=2, max_rounds=12)
    assert max(plan.round_drop) <= 0.01 + 1e-12
    assert plan.rounds == len(plan.round_drop) >= 2
    for n, ds in plan.densities.items():
        assert len(ds) == plan.rounds and ds[-1] == final[n]
        assert all(a >= b for a, b in zip(ds, ds[1:])) and ds[0] < 1.0
    # a larger per-round budget needs no more rounds
    loose = sens.plan_rounds(0.9, curves, final, round_drop=0.05, min_rounds=1, max_rounds=12)
    assert loose.rounds <= plan.rounds and max(loose.round_drop) <= 0.05 + 1e-12
    # ip1 is flat down to 0.1 and steep below: its steps in log-density shrink once the curve bends
    ds = [1.0] + plan.densities["ip1"]
    steps = [math.log(a / b) for a, b in zip(ds, ds[1:])]
    flat = [s for s, a in zip(steps, ds) if a > 0.1 + 1e-9 and a * math.exp(-s) >= 0.1 - 1e-9]
    steep = [s for s, b in zip(steps, ds[1:]) if b < 0.1 - 1e-9 and b * math.exp(s) <= 0.1 + 1e-9]
    assert flat and steep and max(steep) < min(flat)
    # a flat curve is pruned geometrically: equal steps
    flat_steps = np.diff(np.log([1.0] + plan.densities["ip2"]))
    np.testing.assert_allclose(flat_steps, flat_steps[0], rtol=1e-3)


def test_plan_gives_up_at_max_rounds():
    plan = sens.plan_rounds(0.9, [SENSITIVE], {"conv1": 0.01}, round_drop=0.001, min_rounds=1, max_rounds=3)
    assert plan.rounds == 3 and max(plan.round_drop) > 0.001


def test_density_grid_parsing():
    assert sens.density_grid("0.5, 0.1") == [1.0, 0.5, 0.1]
    assert sens.density_grid(None)[0] == 1.0 and sens.density_grid(None)[-1] == 0.01
    for bad in ("0.5,x", "0", "1.5", "1"):
        with pytest.raises(InputError):
            sens.density_grid(bad)


# ------------------------------------------------------------------ schedule files

LENET5 = {"conv1": "Convolution", "conv2": "Convolution", "ip1": "InnerProduct", "ip2": "InnerProduct"}


def doc(**kw):
    d = {"rounds": 3, "iters_per_round": 100, "finetune_iters": 50, "lr_factor": 0.1,
         "densities": {"conv1": [0.9, 0.8, 0.7], "[fc]": 0.08, "*": 0.5}, "bits": {"[conv]": 8, "ip1": 4, "*": 5}}
    d.update(kw)
    return d


def test_schedule_rules_name_over_kind_over_star():
    s = S.from_dict(doc(), LENET5)
    assert s.round_densities("conv1") == [0.9, 0.8, 0.7]
    assert s.round_densities("conv2") == iterative_schedule(0.5, 3)
    assert s.round_densities("ip1") == iterative_schedule(0.08, 3)
    assert s.bits == {"conv1": 8, "conv2": 8, "ip1": 4, "ip2": 5}
    assert (s.rounds, s.iters_per_round, s.finetune_iters, s.lr_factor) == (3, 100, 50, 0.1)
    only = S.from_dict(doc(densities={"ip1": 0.1}, bits=None), LENET5)
    assert only.round_densities("conv1") == [1.0] * 3 and only.bits is None and set(only.densities) == {"ip1"}


@pytest.mark.parametrize("change, fragment", [
    ({"rounds": 0}, "rounds"),
    ({"rounds": 2.5}, "rounds"),
    ({"lr_factor": -1}, "lr_factor"),
    ({"densities": {"conv1": 1.5}}, "densities['conv1']"),
    ({"densities": {"conv1": [0.5, 0.8, 0.4]}}, "pruned weights never come back"),
    ({"densities": {"conv1": [0.5, 0.4]}}, "2 densities for 3 rounds"),
    ({"densities": {"conv9": 0.5}}, "no prunable layer 'conv9'"),
    ({"bits": {"ip1": 17}}, "bits['ip1']"),
    ({"bits": {"ip1": True}}, "bits['ip1']"),
    ({"densitiez": {}}, "unknown key 'densitiez'"),
    ({"format": "other"}, "format"),
    ({"version": 2}, "version"),
    ({"centroid_grad": "median"}, "centroid_grad"),
])
def test_bad_schedules_are_one_line_errors(change, fragment):
    with pytest.raises(InputError) as e:
        S.from_dict(doc(**change), LENET5, where="s.json")
    msg = str(e.value)
    assert msg.startswith("s.json: ") and fragment in msg and "\n" not in msg


def test_kind_rules_need_layer_types_and_missing_keys_are_named():
    with pytest.raises(InputError, match=r"\[fc\] needs the layers' types"):
        S.from_dict(doc(), list(LENET5))
    d = doc()
    del d["finetune_iters"]
    with pytest.raises(InputError, match="missing finetune_iters"):
        S.from_dict(d, LENET5)


def test_schedule_file_round_trip_and_bad_files(tmp_path):
    s = S.from_dict(doc(net="lenet-5"), LENET5)
    p = str(tmp_path / "s.json")
    S.save_schedule(s, p)
    back = S.load_schedule(p, LENET5)
    assert back.to_dict() == s.to_dict() and back.densities == s.densities and back.bits == s.bits
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        S.load_schedule(str(tmp_path / "bad.json"), LENET5)
    with pytest.raises(InputError, match="cannot read"):
        S.load_schedule(str(tmp_path / "none.json"), LENET5)


def _types(layers):
    """The paper's nets' prunable layers with their types (a preset may give bits by kind, ``[fc]``)."""
    return {n: "Convolution" if n.startswith("conv") else "InnerProduct" for n in layers}


def test_shipped_preset_schedules_load_for_their_nets():
    from caffe_dc.base import paper

    for net in paper.PAPER_DENSITY:
        for preset in ("quick", "full"):
            try:
                path = S.builtin(net, preset)
            except InputError:
                continue
            s = S.load_schedule(path, _types(paper.PAPER_DENSITY[net]))
            # densities for every prunable layer, or a budget from which the run chooses them
            assert s.rounds >= 1 and (set(s.densities) == set(paper.PAPER_DENSITY[net]) or
                                      (s.budget and not s.densities)), (net, preset)
    for net in ("lenet-5", "lenet-300-100"):      # budgets: the run chooses on its own validation split
        s = S.load_schedule(S.builtin(net, "full"), _types(paper.PAPER_DENSITY[net]))
        assert s.budget["target_rate"] > 1 and s.reference_iters and s.reference_solver["lr_policy"] == "multistep"


# ------------------------------------------------------------------ choose on the command line


def sensitivity_doc(tmp_path):
    layers = []
    for c in (ROBUST, SENSITIVE, curve("ip2", "fc", 5000, knee(0.2, 0.05))):
        layers.append({"name": c.name, "kind": c.kind, "type": "x", "weights": c.weights,
                       "densities": [float(x) for x in c.densities[::-1]],
                       "accuracy": [float(x) for x in c.accuracy[::-1]]})
    d = {"format": "caffe-dc-sensitivity", "net": "toy", "images": 2000, "split": "validation",
         "baseline": {"accuracy": 0.9, "correct": 1800}, "layers": layers}
    p = tmp_path / "sensitivity.json"
    p.write_text(json.dumps(d))
    return str(p)


def test_choose_writes_a_schedule_that_loads(tmp_path):
    src = sensitivity_doc(tmp_path)
    out = str(tmp_path / "sched.json")
    p = run_cli("choose", src, "--max-drop", "0.5", "-o", out, "--bits", "ip1=4", "--reference-iters", "1234")
    assert p.returncode == 0, p.stderr
    s = S.load_schedule(out, {"ip1": "fc", "conv1": "conv", "ip2": "fc"})
    assert s.bits == {"ip1": 4, "conv1": 8, "ip2": 5}
    assert (s.reference_iters, s.snapshot_every) == (1234, None)
    assert s.round_densities("conv1")[-1] > 0.5 > s.round_densities("ip2")[-1] > s.round_densities("ip1")[-1]
    assert s.source["budget"] == {"max_drop_pp": 0.5}
    assert max(s.source["estimated_round_drop_pp"]) <= 1.0 + 1e-9
    assert os.path.getsize(str(tmp_path / "sched.png")) > 1000
    assert "estimated P+Q rate" in p.stdout
    p = run_cli("choose", src, "--target-rate", "40", "-o", out)
    assert p.returncode == 0, p.stderr
    assert json.load(open(out))["source"]["estimated_rate_pq"] >= 40


def test_choose_errors(tmp_path):
    src = sensitivity_doc(tmp_path)
    assert_clean_error(run_cli("choose", src, "--target-rate", "100000"), "out of reach")
    assert_clean_error(run_cli("choose", src, "--max-drop", "1", "-o", src), "overwrite")
    assert_clean_error(run_cli("choose", src, "--max-drop", "1", "--bits", "fc9=3"), "fc9")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": []}))
    assert_clean_error(run_cli("choose", str(bad), "--max-drop", "1"), "not a sensitivity file")
    p = run_cli("choose", src)
    assert p.returncode == 2 and "Traceback" not in p.stderr


# ------------------------------------------------------------------ a tiny real net, in the image

TINY = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "TRAIN_LMDB" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "TEST_LMDB" batch_size: 25 backend: LMDB } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "f1" type: "InnerProduct" bottom: "c1" top: "f1"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "f1" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "f1" bottom: "label" top: "accuracy" include { phase: TEST } }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("caffe")
    from caffe_dc.pycaffe import datasets, solving

    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(60, 8, 8)).astype(np.uint8)
    labels = rng.randint(0, 4, size=60)
    lmdb = str(d / "val_lmdb")
    datasets._write_lmdb(lmdb, images, labels)
    proto = d / "train_val.prototxt"
    proto.write_text(TINY.replace("TEST_LMDB", lmdb))
    caffe = solving.import_caffe()
    caffe.set_random_seed(3)
    net = caffe.Net(str(proto), caffe.TEST)
    model = str(d / "tiny.caffemodel")
    net.save(model)
    return d, str(proto), model, lmdb


def caffe_count(proto_path, model, lmdb, n, tmp):
    """Correct images by Caffe's own Accuracy layer, one batch holding the whole subset."""
    from caffe_dc.pycaffe import solving
    from caffe_dc.stages.sensitivity import net_param_for, with_lmdb
    from caffe_dc.pycaffe.caffemodel import save_net_proto

    caffe = solving.import_caffe()
    param, _ = with_lmdb(net_param_for(proto_path)[1], lmdb, n)
    p = os.path.join(tmp, "whole.prototxt")
    save_net_proto(param, p)
    acc = float(caffe.Net(p, caffe.TEST, weights=model).forward()["accuracy"])
    return int(round(acc * n))


def test_tiny_net_counts_match_caffe_and_weights_come_back(tiny, tmp_path):
    from caffe_dc.algorithms.pruning import density_mask
    from caffe_dc.pycaffe.caffemodel import load_params, save_params
    from caffe_dc.base.params import LayerParams
    from caffe_dc.stages.sensitivity import run_sensitivity

    d, proto, model, lmdb = tiny
    doc = run_sensitivity(proto, model, lmdb, str(tmp_path), images=50, grid=[0.5, 0.1], progress=False)
    assert (doc["images"], doc["batch"]) == (50, 25)         # 25 divides 50: no image counted twice
    assert [(l["name"], l["kind"]) for l in doc["layers"]] == [("c1", "conv"), ("f1", "fc")]
    assert {"git_commit", "blas_kernel"} <= set(doc["environment"])    # it names where it was made
    base = caffe_count(proto, model, lmdb, 50, str(tmp_path))
    assert doc["baseline"]["correct"] == base
    params = load_params(model)
    for l in doc["layers"]:
        assert l["densities"] == [1.0, 0.5, 0.1] and l["correct"][0] == base
        for dens, got in zip(l["densities"][1:], l["correct"][1:]):
            w = params[l["name"]].blobs[0]
            pruned = type(params)(params)
            pruned[l["name"]] = LayerParams(params[l["name"]].type,
                                            [np.where(density_mask(w, dens), w, 0).astype(np.float32)]
                                            + params[l["name"]].blobs[1:])
            pm = str(tmp_path / "p.caffemodel")
            save_params(pruned, pm)
            assert got == caffe_count(proto, pm, lmdb, 50, str(tmp_path)), (l["name"], dens)
        assert l["accuracy"] == [c / 50 for c in l["correct"]]


def test_tiny_net_cli_end_to_end(tiny, tmp_path):
    from caffe_dc.algorithms.schedule import load_schedule

    d, proto, model, lmdb = tiny
    out = tmp_path / "sens"
    p = run_cli("sensitivity", proto, model, "--lmdb", lmdb, "-o", out, "--images", 60, "--grid", "0.6,0.3,0.1")
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.load(open(str(out / "sensitivity.json")))
    assert doc["images"] == 60 and doc["split"] == "validation" and len(doc["layers"]) == 2
    assert os.path.getsize(str(out / "sensitivity.png")) > 1000
    p = run_cli("choose", out / "sensitivity.json", "--max-drop", "5", "-o", tmp_path / "s.json")
    assert p.returncode == 0, p.stderr[-2000:]
    s = load_schedule(str(tmp_path / "s.json"), {"c1": "Convolution", "f1": "InnerProduct"})
    assert s.rounds >= 2


def test_tiny_net_errors(tiny, tmp_path):
    d, proto, model, lmdb = tiny
    assert_clean_error(run_cli("sensitivity", proto, model, "--lmdb", str(d / "nope"), "-o", tmp_path), "nope")
    assert_clean_error(run_cli("sensitivity", proto, str(d / "nope.caffemodel"), "--lmdb", lmdb, "-o", tmp_path),
                       "caffemodel")
    deploy = d / "deploy.prototxt"
    deploy.write_text('name: "d" input: "data" input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }\n'
                      + TINY[TINY.index('layer { name: "c1"'):TINY.index('layer { name: "loss"')])
    assert_clean_error(run_cli("sensitivity", str(deploy), model, "--lmdb", lmdb, "-o", tmp_path), "not a deploy one")
    assert_clean_error(run_cli("sensitivity", proto, model, "--lmdb", lmdb, "-o", tmp_path, "--layers", "r1"), "r1")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="needs dataset-fashion-mnist")
def test_lenet5_defaults_to_the_validation_split(tiny, tmp_path):
    from caffe_dc.pycaffe import datasets, nets, solving

    caffe = solving.import_caffe()
    model = str(tmp_path / "lenet5.caffemodel")
    caffe.Net(nets.get("lenet-5").deploy, caffe.TEST).save(model)   # untrained: the plumbing is under test
    out = tmp_path / "sens"
    p = run_cli("sensitivity", "lenet-5", model, "-o", out, "--data", "fashion-mnist", "--data-root", tmp_path / "data",
                "--limit", 600,
                "--val", 100, "--images", 100, "--grid", "0.5", "--layers", "conv1,ip2")
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.load(open(str(out / "sensitivity.json")))
    info = datasets.prepare(data="fashion-mnist", out_root=str(tmp_path / "data"), quiet=True, limit=600, val=100)
    assert doc["lmdb"] == os.path.abspath(info.val_lmdb) and doc["images"] == 100
    assert [l["name"] for l in doc["layers"]] == ["conv1", "ip2"]
    d, proto, tiny_model, lmdb = tiny
    assert_clean_error(run_cli("sensitivity", proto, tiny_model, "-o", tmp_path / "x"), "--lmdb")


# ---------------------------------------------------------------- a target rate the net's sizes cannot reach (issue 30)

def test_rate_ceiling_counts_what_no_pruning_removes():
    shapes = {"ip1": [(10, 100), (10,)], "conv1": [(2, 1, 1, 2)], "bn": [(10,), (10,), (1,)]}
    types = {"ip1": "InnerProduct", "conv1": "Convolution"}
    # ip1: a 5-bit codebook (32 floats) and its 10 biases; conv1: its 4 values raw beat an 8-bit codebook;
    # the BatchNorm's 21 values raw
    floor = 32 * (32 + 10) + 32 * 4 + 32 * 21
    assert sens.rate_ceiling(shapes, types, {}) == pytest.approx(32 * (1010 + 4 + 21) / floor)
    assert sens.rate_ceiling(shapes, types, {"ip1": 2}) == pytest.approx(32 * 1035 / (32 * (4 + 10 + 4 + 21)))
    sens.check_reachable(15.0, shapes, types, {})   # 15.4x at most
    with pytest.raises(InputError, match="out of reach"):
        sens.check_reachable(16.0, shapes, types, {})


def test_no_encoded_file_passes_the_ceiling():
    """The encoder's own file, pruned as far as it goes (one weight a layer), stays below the ceiling."""
    from caffe_dc.base.params import LayerParams
    from caffe_dc.codec import frontend

    rng = np.random.RandomState(0)
    params = {"ip1": LayerParams("InnerProduct", [rng.randn(300, 784).astype(np.float32),
                                                  rng.randn(300).astype(np.float32)]),
              "ip2": LayerParams("InnerProduct", [rng.randn(10, 300).astype(np.float32),
                                                  rng.randn(10).astype(np.float32)])}
    shapes = {n: [b.shape for b in lp.blobs] for n, lp in params.items()}
    types = {n: lp.type for n, lp in params.items()}
    for bits in (1, 4):
        q = frontend.post_hoc(params, None, density={"ip1": 1 / 235200, "ip2": 1 / 3000},
                              bits={"ip1": bits, "ip2": bits})
        data, stats = frontend.encode_params(q, None, meta={})
        rate = stats.totals()["original_bits"] / 8.0 / len(data)
        assert rate < sens.rate_ceiling(shapes, types, {"ip1": bits, "ip2": bits})
