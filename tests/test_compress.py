"""`caffe-dc compress` on a net of one's own: discovery, refusals, and a tiny end-to-end run on real Caffe."""
import json
import os

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from google.protobuf import text_format  # noqa: E402

from caffe_dc.algorithms import schedule as schedules  # noqa: E402
from caffe_dc.base.errors import InputError  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.pycaffe import caffemodel, datasets, nets, rewrite  # noqa: E402
from caffe_dc.codec import frontend  # noqa: E402
from conftest import assert_clean_error, killed_in_chunk, run_cli  # noqa: E402

N_CLASSES = 4


def write_lmdb(path, n, seed):
    """1x12x12 images whose class is the bright quadrant, plus noise: a net learns it in a few steps."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % N_CLASSES
    images = rng.randint(0, 60, size=(n, 12, 12)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, 6 * r:6 * r + 6, 6 * q:6 * q + 6] += 150
    datasets._write_lmdb(path, images, labels)
    return path


def data_layers(train, val, batch=16):
    return """
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "%s" batch_size: %d backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "%s" batch_size: %d backend: LMDB } }
""" % (train, batch, val, batch)


def bn(name):
    return """
layer { name: "%s_bn" type: "BatchNorm" bottom: "%s" top: "%s"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "%s_scale" type: "Scale" bottom: "%s" top: "%s" scale_param { bias_term: true } }
""" % (name, name, name, name, name, name)


# conv1 -> BN/Scale -> relu; conv2 (grouped) -> BN/Scale; Eltwise sum with conv1; conv3 (dilated); fc
BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "msra" } } }
%s
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 bias_term: false weight_filler { type: "msra" } } }
%s
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" eltwise_param { operation: SUM } }
layer { name: "relu2" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "conv3" type: "Convolution" bottom: "sum" top: "conv3"
  convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 stride: 2 weight_filler { type: "msra" } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "fc" type: "InnerProduct" bottom: "conv3" top: "fc"
  inner_product_param { num_output: %d weight_filler { type: "xavier" } } }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
""" % (bn("conv1"), bn("conv2"), N_CLASSES)

SOLVER = """net: "%s"
test_iter: 1
test_interval: 1000
base_lr: 0.05
momentum: 0.8
weight_decay: 0.001
lr_policy: "step"
gamma: 0.5
stepsize: 20
max_iter: %d
snapshot_prefix: "%s"
random_seed: 3
"""


def write_net(folder, body=BODY, train=None, val=None, max_iter=40):
    tv = os.path.join(folder, "train_val.prototxt")
    with open(tv, "w") as f:
        f.write('name: "resnetish"\n' + (data_layers(train, val) if train else "") + body)
    solver = os.path.join(folder, "solver.prototxt")
    with open(solver, "w") as f:
        f.write(SOLVER % (tv, max_iter, os.path.join(folder, "ref")))
    return solver


@pytest.fixture(scope="module")
def custom_net(tmp_path_factory):
    """LMDBs (train 256, val 60, test 50: neither a multiple of the batch of 16), net, solver and a
    reference caffemodel trained 40 iterations with the user's own solver."""
    root = tmp_path_factory.mktemp("custom")
    train = write_lmdb(str(root / "train_lmdb"), 256, 0)
    val = write_lmdb(str(root / "val_lmdb"), 60, 1)
    test = write_lmdb(str(root / "test_lmdb"), 50, 2)
    solver = write_net(str(root), train=train, val=val)
    s = caffe.get_solver(solver)
    s.solve()
    ref = str(root / "ref.caffemodel")
    s.net.save(ref)
    sched = root / "schedule.json"
    sched.write_text(json.dumps({"rounds": 2, "iters_per_round": 6, "finetune_iters": 6, "lr_factor": 0.1,
                                 "snapshot_every": 4, "densities": {"[conv]": 0.6, "fc": 0.3},
                                 "bits": {"[conv]": 6, "[fc]": 4}}))
    return root, solver, ref, test, str(sched)


def compress_args(custom_net, out):
    root, solver, ref, test, sched = custom_net
    return ("compress", "--solver", solver, "--weights", ref, "--schedule", sched, "--test-lmdb", test, "--out", out)


@pytest.fixture(scope="module")
def compressed(custom_net):
    root = custom_net[0]
    out = root / "run"
    p = run_cli(*compress_args(custom_net, out), cwd=str(root))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, p


def test_compress_custom_net_end_to_end(custom_net, compressed):
    root, solver, ref, test, sched = custom_net
    out, p = compressed
    args = compress_args(custom_net, out)
    state = json.load(open(str(out / "pipeline.json")))
    # retraining in both stages, through the hooks, with the user's solver
    assert "round 2/2: val accuracy" in p.stdout and "clustered (linear init)" in p.stdout
    pruned = caffemodel.load_params(state["prune"]["caffemodel"])
    for layer, d in (("conv1", 0.6), ("conv2", 0.6), ("conv3", 0.6), ("fc", 0.3)):
        w = pruned[layer].blobs[0]
        assert abs(np.count_nonzero(w) / w.size - d) < 0.02, layer
        assert np.array_equal(w != 0, pruned[layer + "_mask"].blobs[0] != 0)
    q = caffemodel.load_params(state["quantize"]["caffemodel"])
    assert q["conv2"].blobs[0].shape == (8, 4, 3, 3)   # the grouped convolution's weights
    for layer, bits in (("conv1", 6), ("conv3", 6), ("fc", 4)):
        cb = q[layer + "_codebook"].blobs[0]
        assert cb.size == 2 ** bits
        assert set(np.unique(q[layer].blobs[0])) <= set(cb.tolist())
    # the .dcz decodes bit for bit, BatchNorm/Scale blobs and biases included, and Caffe agrees
    assert state["decode"]["bit_exact"] is True
    dec = caffemodel.load_params(state["decode"]["caffemodel"])
    for name in ("conv1_bn", "conv1_scale", "conv2_bn", "conv2_scale", "conv3"):
        for a, b in zip(q[name].blobs, dec[name].blobs):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), name
    assert state["caffe_test"]["decoded"]["accuracy"] == state["caffe_test"]["quantized"]["accuracy"]
    m = json.load(open(str(out / "metrics.json")))
    assert m["final_test"]["n"] == m["reference_test"]["n"] == 50 and m["data"]["n_val"] == 60
    assert abs(state["caffe_test"]["accuracy"] - m["final_accuracy"]) < 1e-6
    assert m["paper_net"] is False and m["schedule_source"] == sched
    report = open(str(out / "report.md")).read()
    assert "ours / paper" not in report and "| paper (" not in report and "Table 1" not in report
    table = report.split("## Per layer, in net order")[1]
    assert [table.index("| %s |" % n) for n in ("conv1", "conv2", "conv3", "fc")] == \
        sorted(table.index("| %s |" % n) for n in ("conv1", "conv2", "conv3", "fc"))
    # what was changed in the user's solver is listed, and nothing else was
    changes = state["prune"]["solver_changes"]
    fields = {c.split(":")[0] for c in changes}
    assert "base_lr: 0.05 -> 0.005" in changes and "max_iter: 40 -> 6" in changes
    assert not fields & {"momentum", "weight_decay", "lr_policy", "gamma", "stepsize", "type", "random_seed"}
    assert "- solver base_lr: 0.05 -> 0.005" in report
    assert "- train_val: Accuracy layer 'acc''s top 'acc' read as 'accuracy'" in report
    assert "held out from every choice" in report
    # unchanged inputs: every stage is reused
    again = run_cli(*args, cwd=str(root))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done before with the same inputs, skipping") == 9


def test_killed_fine_tuning_resumes_to_the_same_model(custom_net, compressed, tmp_path, monkeypatch):
    """Snapshots and resume for any net: killed after the fine-tuning's snapshot at iteration 4, the
    rerun reads on from there (BatchNorm statistics, codebooks and the data position included) and
    ends in the very model of the run that was never killed."""
    from caffe_dc.pipeline.reproduce import Pipeline
    from caffe_dc.stages.run import RunOptions

    root, solver, ref, test, sched = custom_net
    opts = RunOptions(solver=solver, test_lmdb=test, weights=ref, schedule=sched, out=str(tmp_path / "run"))
    # prune 2 x (4 + 2); the fine-tuning's 6 iterations go in one-iteration pieces (it keeps its best of
    # evenly spaced evaluations), snapshotted at 4: killed in its fifth piece, after that snapshot
    calls = killed_in_chunk(monkeypatch, 4 + 5)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(opts, progress=False).run()
    assert calls[-1] == "quantize"
    assert os.path.isfile(str(tmp_path / "run" / "quantize" / "retrain" / "snap_iter_4.solverstate"))
    Pipeline(opts, progress=False).run()
    assert calls[9:] == ["quantize", "quantize"]     # pieces 5 and 6 again, from the snapshot
    for f in ("quantize/quantized.caffemodel", "model.dcz"):
        with open(str(compressed[0] / f), "rb") as a, open(str(tmp_path / "run" / f), "rb") as b:
            assert a.read() == b.read(), f


def test_compress_without_test_lmdb_says_so(custom_net, tmp_path):
    root, solver, ref, _, sched = custom_net
    from caffe_dc.pipeline.reproduce import resolve_schedule
    from caffe_dc.stages.run import RunOptions

    src = nets.user_source(solver)
    assert not src.info.has_val and src.info.split("test") == src.info.split("val")
    assert src.info.n_test == 60
    # the TEST batch 16 does not divide 60: it becomes 15, and the change is listed
    assert nets.data_layers(src.test_net)["test"].data_param.batch_size == 15
    assert any("TEST batch 16 -> 15" in c for c in src.changes)
    # no --schedule: the documented default, a budget, its iterations a fifth of the solver's max_iter
    opts = RunOptions(solver=solver, weights=ref)
    s, where, doc = resolve_schedule(src, None, opts)
    assert "default" in where and s.iters_per_round == 8 and s.rounds == 3
    assert s.budget["max_drop_pp"] == 0.5 and s.densities == {}
    assert s.bits == {"conv1": 8, "conv2": 8, "conv3": 8, "fc": 5}
    assert s.closed_loop == schedules.search_loop(0.5)     # and past the chosen densities while the drop holds
    s, _, _ = resolve_schedule(src, sched, opts.replace(target_rate=20.0))
    assert s.budget["target_rate"] == 20.0 and s.densities == {}
    s, _, doc20 = resolve_schedule(src, None, opts.replace(target_rate=20.0))   # a rate is where the loop stops
    assert s.closed_loop == {"max_drop_pp": 0.5, "max_rounds": schedules.SEARCH_ROUNDS}
    # the file's description stays, and says what the command line changed in it
    assert doc20["description"] == doc["description"] + "; changed on the command line: target_rate 20"
    s, _, _ = resolve_schedule(src, sched, opts.replace(max_drop=1.5))
    assert s.budget["max_drop_pp"] == 1.5 and s.closed_loop == schedules.search_loop(1.5)
    s, _, _ = resolve_schedule(src, sched, opts.replace(bits={"*": 7, "fc": 3}, rounds=2))
    assert s.bits == {"conv1": 7, "conv2": 7, "conv3": 7, "fc": 3} and s.rounds == 2
    assert s.description == ""   # a file without a description gets none
    s, _, _ = resolve_schedule(src, None, opts.replace(bits={"*": 7, "fc": 3}, rounds=2))
    assert s.description == doc["description"] + "; changed on the command line: rounds 2, bits *=7,fc=3"
    from caffe_dc.report.run_report import user_data_note

    assert "No separate held-out test split" in user_data_note(src.info)


def _net(text):
    n = caffemodel.caffe_pb2().NetParameter()
    text_format.Merge(text, n)
    return n


DISCOVERY = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 9 dim: 9 } } }
layer { name: "g" type: "Convolution" bottom: "data" top: "g"
  convolution_param { num_output: 8 kernel_size: 3 group: 4 } }
layer { name: "bn" type: "BatchNorm" bottom: "g" top: "g" }
layer { name: "sc" type: "Scale" bottom: "g" top: "g" scale_param { bias_term: true } }
layer { name: "dil" type: "Convolution" bottom: "g" top: "dil"
  convolution_param { num_output: 6 kernel_size: 3 dilation: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "dil" top: "up"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 group: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "up" top: "fc" inner_product_param { num_output: 3 } }
"""


def test_layer_discovery_grouped_dilated_deconvolution():
    net = _net(DISCOVERY)
    assert rewrite.prunable_layers(net) == ["g", "dil", "up", "fc"]
    types = {l.name: l.type for l in net.layer if l.name in rewrite.prunable_layers(net)}
    s = schedules.from_dict({"rounds": 1, "iters_per_round": 1, "finetune_iters": 1, "lr_factor": 0.1,
                             "densities": {"[conv]": 0.5, "[fc]": 0.1}, "bits": {"[conv]": 8, "[fc]": 5}}, types)
    assert s.final_densities() == {"g": 0.5, "dil": 0.5, "up": 0.5, "fc": 0.1}   # Deconvolution is a conv layer
    from caffe_dc.pycaffe import solving

    shapes = solving.param_shapes(net)
    assert shapes["g"][0] == (8, 1, 3, 3) and shapes["up"][0] == (6, 2, 2, 2) and len(shapes["bn"]) == 3
    # the codec compresses each of them, stores BatchNorm/Scale and biases raw, and decodes bit for bit
    rng = np.random.RandomState(0)
    params = {}
    for name, blobs in shapes.items():
        params[name] = LayerParams([l.type for l in net.layer if l.name == name][0],
                                   [rng.randn(*b).astype(np.float32) for b in blobs])
    q = frontend.post_hoc(params, None, density={n: 0.5 for n in ("g", "dil", "up", "fc")})
    data, stats = frontend.encode_params(q, "discovery")
    assert [b.name for b in stats.quantized] == ["g", "dil", "up", "fc"]
    assert {b.name for b in stats.raw} >= {"bn", "sc"}
    back, _, _ = frontend.decode_bytes(data)
    want = {k: v for k, v in q.items() if not k.endswith(("_codebook", "_codes"))}
    assert frontend.verify_equal(want, back, "round trip") > 0


def test_shared_parameters_are_refused_naming_the_layers(custom_net, tmp_path):
    root, _, ref, _, _ = custom_net
    body = BODY.replace('top: "fc"\n  inner_product_param', 'top: "fc"\n  param { name: "w_shared" }\n  inner_product_param')
    body = body.replace('layer { name: "acc"', """layer { name: "fc_b" type: "InnerProduct" bottom: "conv3" top: "fc_b"
  param { name: "w_shared" } inner_product_param { num_output: %d } }
layer { name: "silence" type: "Silence" bottom: "fc_b" }
layer { name: "acc\"""" % N_CLASSES)
    solver = write_net(str(tmp_path), body, str(root / "train_lmdb"), str(root / "val_lmdb"))
    assert rewrite.shared_parameters(caffemodel.load_net_proto(str(tmp_path / "train_val.prototxt"))) == \
        {"w_shared": ["fc", "fc_b"]}
    with pytest.raises(InputError, match=r"layers fc, fc_b share parameters through param \{ name: 'w_shared' \}"):
        nets.user_source(solver)
    p = run_cli("compress", "--solver", solver, "--weights", ref, "--out", tmp_path / "run", cwd=str(tmp_path))
    assert_clean_error(p, "fc, fc_b", "share parameters")
    assert not (tmp_path / "run").exists()


def test_a_net_without_data_layers_is_a_clear_error(custom_net, tmp_path):
    _, _, ref, _, _ = custom_net
    body = 'layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 1 dim: 1 ' \
           'dim: 12 dim: 12 } shape { dim: 1 } } }\n' + BODY
    solver = write_net(str(tmp_path), body)
    p = run_cli("compress", "--solver", solver, "--weights", ref, "--out", tmp_path / "run", cwd=str(tmp_path))
    assert_clean_error(p, "has no Data layers (it reads its input through Input)", "TRAIN-phase Data layer")
    p = run_cli("compress", "--solver", str(tmp_path / "none.prototxt"), "--weights", ref, cwd=str(tmp_path))
    assert_clean_error(p, "no such solver")


def test_max_drop_searches_past_the_chosen_densities_within_the_measured_drop(custom_net, tmp_path):
    """`compress --max-drop PP`: the sensitivity curves give a first waypoint; the closed loop then goes on
    past it while the validation drop measured after retraining stays within PP, and keeps the last round
    that held (60 validation images: one image is 1.67 pp, so the budget here is 5 pp)."""
    root, solver, ref, test, _ = custom_net
    out = tmp_path / "run"
    p = run_cli("compress", "--solver", solver, "--weights", ref, "--test-lmdb", test, "--max-drop", "5",
                "--out", out, cwd=str(root))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    state = json.load(open(str(out / "pipeline.json")))
    loop, rounds = state["prune"]["closed_loop"], state["prune"]["rounds"]
    assert loop["past_targets"] and loop["max_drop_pp"] == 5.0 and loop["stopped"] in ("min_step", "cap")
    assert 1 <= len(rounds) <= schedules.SEARCH_ROUNDS
    for r in rounds:
        assert r["held"] == (r["drop_bound_pp"] <= 5.0)
    held = [r for r in rounds if r["held"]]
    if held:    # the file holds the last round that held, the sparsest within the drop
        assert loop["held_round"] == held[-1]["round"]
        assert state["prune"]["density"] == pytest.approx(held[-1]["density"])
        assert held[-1]["density"] == min(r["density"] for r in held)
    report = (out / "report.md").read_text()
    assert "searched for the largest rate within the drop" in report


def test_a_collapsed_fine_tuning_keeps_the_clustered_model(custom_net, compressed, tmp_path):
    """A centroid fine-tuning that diverges (here: the learning rate x 2000) ends far below its clustered
    start on validation; the stage keeps the clustered model, says so, and records why."""
    from caffe_dc.stages import quantize

    root, solver, ref, test, _ = custom_net
    state = json.load(open(str(compressed[0] / "pipeline.json")))
    cfg = quantize.QuantConfig(bits={"conv1": 4, "conv2": 4, "conv3": 4, "fc": 3}, iters=8, lr_factor=2000.0,
                               snapshot_every=4)
    m = quantize.run_quantization(nets.user_source(solver), state["prune"]["caffemodel"], None,
                                  str(tmp_path / "q"), cfg, progress=False)
    last = m["history"][-1]["accuracy"]
    assert quantize.collapsed(m["accuracy_before_finetune"], last), (m["accuracy_before_finetune"], last)
    assert m["fine_tune_discarded"] and "collapsed" in m["fine_tune_discarded"]
    assert m["accuracy"] == m["accuracy_before_finetune"]
    kept = caffemodel.load_params(m["caffemodel"])
    start = caffemodel.load_params(str(tmp_path / "q" / "clustered.caffemodel"))
    assert set(kept) == set(start)
    for k in start:
        for a, b in zip(kept[k].blobs, start[k].blobs):
            assert np.array_equal(a, b), k
    assert not quantize.collapsed(0.90, 0.86) and quantize.collapsed(0.90, 0.84)
