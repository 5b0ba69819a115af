"""Mask and group-by-index hooks on real pycaffe: the invariants the paper relies on."""
import os

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import rewrite  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from caffe_dc.base.blobs import CODEBOOK, CODES, MASK
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.pycaffe.datasets import _write_lmdb  # noqa: E402
from caffe_dc.pycaffe.hooks import CompressionHooks  # noqa: E402
from conftest import killed_in_chunk  # noqa: E402

NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 } data_param { source: "%(train)s" batch_size: 16 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 } data_param { source: "%(test)s" batch_size: 16 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 5 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 32 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
LR, MOM, WD = 0.01, 0.9, 5e-4
LAYERS = ("conv1", "ip1", "ip2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rs = np.random.RandomState(0)
    labels = rs.randint(0, 10, 96).astype(np.uint8)
    # class-dependent blobs so training has a signal
    images = (rs.rand(96, 28, 28) * 60 + labels[:, None, None] * 19).astype(np.uint8)
    _write_lmdb(str(root / "train"), images, labels)
    _write_lmdb(str(root / "test"), images[:32], labels[:32])
    base = str(root / "base.prototxt")
    with open(base, "w") as f:
        f.write(NET % {"train": root / "train", "test": root / "test"})
    return root, base


def solver_param(net_path, prefix):
    pb = caffemodel.caffe_pb2()
    sp = pb.SolverParameter()
    sp.net = net_path
    sp.base_lr, sp.momentum, sp.weight_decay = LR, MOM, WD
    sp.lr_policy = "fixed"
    sp.max_iter = 1000
    sp.test_iter.append(2)
    sp.random_seed = 3
    sp.snapshot_prefix = prefix
    sp.solver_mode = sp.CPU
    return sp


def initial_params(root, base):
    s = solving.make_solver(solver_param(base, str(root / "init")), str(root / "init_solver.prototxt"))
    s.step(5)
    path = str(root / "init.caffemodel")
    s.net.save(path)
    return caffemodel.load_params(path)


def pruned_model(root, base, density=0.3, quantize_bits=None):
    """A caffemodel with mask (and codebook) blobs, and the rewritten prototxt."""
    params = initial_params(root, base)
    out = dict(params)
    kinds = [MASK]
    sizes = {}
    for name in LAYERS:
        w = params[name].blobs[0]
        k = int(round(density * w.size))
        thresh = np.sort(np.abs(w).ravel())[::-1][k - 1]
        mask = (np.abs(w) >= thresh).astype(np.float32)
        w = w * mask
        blobs = [w] + params[name].blobs[1:]
        out[name + "_mask"] = LayerParams("Parameter", [mask])
        if quantize_bits:
            K = 2 ** quantize_bits
            kept = w[mask > 0]
            cb = np.linspace(kept.min(), kept.max(), K - 1).astype(np.float32)
            codes = np.zeros(w.shape, np.float32)
            codes[mask > 0] = 1 + np.argmin(np.abs(kept[:, None] - cb[None, :]), axis=1)
            codebook = np.concatenate([[0.0], cb]).astype(np.float32)
            blobs[0] = codebook[codes.astype(int)]
            out[name + "_codebook"] = LayerParams("Parameter", [codebook])
            out[name + "_codes"] = LayerParams("Parameter", [codes])
            sizes[name] = K
        out[name] = LayerParams(params[name].type, blobs)
    if quantize_bits:
        kinds += [CODEBOOK, CODES]
    net = rewrite.add_blobs(caffemodel.load_net_proto(base), {n: params[n].blobs[0].shape for n in LAYERS},
                            kinds, sizes)
    proto = str(root / ("q%s.prototxt" % quantize_bits if quantize_bits else "pruned.prototxt"))
    caffemodel.save_net_proto(net, proto)
    model = proto.replace(".prototxt", ".caffemodel")
    caffemodel.save_params(out, model)
    return proto, model


def start(root, proto, model, tag):
    s = solving.make_solver(solver_param(proto, str(root / tag)), str(root / (tag + "_solver.prototxt")))
    s.net.copy_from(model)
    hooks = CompressionHooks(s.net).install(s)
    return s, hooks


def test_pruned_weights_stay_zero_and_kept_ones_move(tiny):
    root, base = tiny
    proto, model = pruned_model(root, base)
    s, hooks = start(root, proto, model, "prune")
    assert sorted(hooks.names) == sorted(LAYERS)
    before = {n: s.net.params[n][0].data.copy() for n in LAYERS}
    s.step(60)
    for n in LAYERS:
        w = s.net.params[n][0].data
        mask = s.net.params[n + "_mask"][0].data
        assert np.all(w[mask == 0] == 0.0)
        assert np.all(w[mask != 0] != before[n][mask != 0]), n  # every kept weight moved
        assert 0.25 < mask.mean() < 0.35
    # the mask blobs themselves are never touched by SGD
    assert np.array_equal(s.net.params["ip1_mask"][0].data != 0, before["ip1"] != 0)


def test_masks_survive_snapshot_and_restore(tiny):
    root, base = tiny
    proto, model = pruned_model(root, base)
    s, hooks = start(root, proto, model, "snap")
    s.step(20)
    s.snapshot()
    state = str(root / "snap_iter_20.solverstate")
    assert os.path.isfile(state)
    saved = caffemodel.load_params(str(root / "snap_iter_20.caffemodel"))
    assert "ip1_mask" in saved and saved["ip1_mask"].type == "Parameter"
    assert np.all(saved["ip1"].blobs[0][saved["ip1_mask"].blobs[0] == 0] == 0)
    # a fresh process-equivalent: new solver, restore, re-hook, continue with momentum history
    s2 = solving.make_solver(solver_param(proto, str(root / "snap")), str(root / "snap2_solver.prototxt"))
    s2.restore(state)
    assert s2.iter == 20
    CompressionHooks(s2.net).install(s2)
    restored = {n: s2.net.params[n][0].data.copy() for n in LAYERS}
    for n in LAYERS:
        assert np.array_equal(restored[n], s.net.params[n][0].data)
    s2.step(40)
    assert s2.iter == 60
    for n in LAYERS:
        mask = s2.net.params[n + "_mask"][0].data
        assert np.all(s2.net.params[n][0].data[mask == 0] == 0.0)
        assert np.all(s2.net.params[n][0].data[mask != 0] != restored[n][mask != 0])


def test_group_by_index_invariants_after_100_steps(tiny):
    root, base = tiny
    bits = 3
    proto, model = pruned_model(root, base, quantize_bits=bits)
    s, hooks = start(root, proto, model, "quant")
    K = 2 ** bits
    codes = {n: np.rint(s.net.params[n + "_codes"][0].data).astype(int) for n in LAYERS}
    cb0 = {n: s.net.params[n + "_codebook"][0].data.copy() for n in LAYERS}
    # Follow each centroid through SGD with momentum and decay, fed the summed gradient of its cluster.
    expect = {n: cb0[n].astype(np.float64) for n in LAYERS}
    hist = {n: np.zeros(K) for n in LAYERS}
    grads = {}

    def record():
        for n in LAYERS:
            d = s.net.params[n][0].diff
            g = np.zeros(K)
            for k in range(1, K):
                sel = codes[n] == k
                if sel.any():
                    g[k] = d[sel][0]
                    assert np.all(d[sel] == d[sel][0])  # one gradient per cluster
            grads[n] = g
            assert np.all(d[codes[n] == 0] == 0.0)
    s.add_callback(lambda: None, record)  # runs after the hooks' on_gradients_ready
    for _ in range(100):
        s.step(1)
        for n in LAYERS:
            hist[n] = MOM * hist[n] + LR * (grads[n] + WD * expect[n])
            expect[n] = expect[n] - hist[n]
            expect[n][0] = 0.0
    for n in LAYERS:  # Caffe's own update keeps each cluster bit-equal, before any snapping
        w = s.net.params[n][0].data
        for k in np.unique(codes[n][codes[n] != 0]):
            assert np.unique(w[codes[n] == k]).size == 1
    hooks.sync_blobs()
    for n in LAYERS:
        w = s.net.params[n][0].data
        cb = s.net.params[n + "_codebook"][0].data
        assert np.all(w[codes[n] == 0] == 0.0)
        assert np.unique(w[codes[n] != 0]).size <= K - 1
        assert np.array_equal(w, cb[codes[n]])  # exactly the current centroids
        present = np.unique(codes[n][codes[n] != 0])
        assert np.all(cb[present] != cb0[n][present])  # every used centroid moved
        np.testing.assert_allclose(cb[present], expect[n][present], rtol=2e-4, atol=1e-6)


def test_codebook_survives_snapshot_and_restore(tiny):
    root, base = tiny
    proto, model = pruned_model(root, base, quantize_bits=2)
    s, hooks = start(root, proto, model, "qsnap")
    s.step(10)
    hooks.sync_blobs()
    s.snapshot()
    saved = caffemodel.load_params(str(root / "qsnap_iter_10.caffemodel"))
    for n in LAYERS:
        cb = saved[n + "_codebook"].blobs[0]
        codes = np.rint(saved[n + "_codes"].blobs[0]).astype(int)
        assert np.array_equal(saved[n].blobs[0], cb[codes])
    s2 = solving.make_solver(solver_param(proto, str(root / "qsnap")), str(root / "qsnap2_solver.prototxt"))
    s2.restore(str(root / "qsnap_iter_10.solverstate"))
    h2 = CompressionHooks(s2.net).install(s2)
    s2.step(10)
    h2.sync_blobs()
    for n in LAYERS:
        w = s2.net.params[n][0].data
        assert np.unique(w[w != 0]).size <= 3
        assert np.array_equal(w, s2.net.params[n + "_codebook"][0].data[np.rint(s2.net.params[n + "_codes"][0].data).astype(int)])


def test_rewritten_net_runs_under_caffe_test_and_deploy_loads(tiny, tmp_path):
    root, base = tiny
    proto, model = pruned_model(root, base)
    scores = solving.caffe_cli_test(proto, model, 2)
    py = solving.evaluate(proto, model, 2)
    assert scores["accuracy"] == pytest.approx(py["accuracy"], abs=1e-6)
    # the unchanged net (no mask layers) still loads the pruned weights
    net = caffe.Net(base, caffe.TEST, weights=model)
    assert np.count_nonzero(net.params["ip1"][0].data) == int(round(0.3 * net.params["ip1"][0].data.size))


def test_retrain_snapshots_are_whole_and_resume_after_a_move(tiny, tmp_path, monkeypatch):
    """A kill can come at any instant: the solverstate must appear only once both files are whole,
    and it must name the caffemodel beside it even after the run folder moves."""
    from caffe_dc.pycaffe import retraining
    root, base = tiny
    proto, model = pruned_model(root, base)
    sp = solver_param(proto, "unused")
    out = tmp_path / "run"
    calls = killed_in_chunk(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        retraining.retrain(proto, sp, model, str(out), iters=12, test_iter=1, final_caffemodel=str(tmp_path / "final.caffemodel"),
                           snapshot_every=5, progress=False)
    assert sorted(p.name for p in out.glob("snap_iter_*")) == ["snap_iter_5.caffemodel", "snap_iter_5.solverstate"]
    assert list((out / retraining.STAGING).iterdir()) == []
    state = caffemodel.caffe_pb2().SolverState()
    state.ParseFromString((out / "snap_iter_5.solverstate").read_bytes())
    assert (state.iter, state.learned_net) == (5, str(out / "snap_iter_5.caffemodel"))
    assert len(state.history) == 9  # momentum for 3 weights, 3 biases and the 3 mask blobs

    moved = tmp_path / "moved"
    out.rename(moved)
    final = tmp_path / "final.caffemodel"
    hist = retraining.retrain(proto, sp, model, str(moved), iters=12, test_iter=1, final_caffemodel=str(final),
                              snapshot_every=5, progress=False)
    assert [h["iter"] for h in hist] == [5, 10, 12]  # resumed at 5, with the test made before the kill
    assert len(calls) == 4  # two pieces before the kill, two after it
    assert not list(moved.glob("snap_iter_*")) and not (moved / retraining.STAGING).exists()
    assert not (moved / "history.json").exists()
    params = caffemodel.load_params(str(final))
    for n in LAYERS:
        assert np.all(params[n].blobs[0][params[n + "_mask"].blobs[0] == 0] == 0)


def test_relink_solverstate_rejects_a_truncated_file():
    pb = caffemodel.caffe_pb2()
    st = pb.SolverState(iter=7, learned_net="/old/place.caffemodel", current_step=2)
    st.history.add().data.extend([1.0, 2.0, 3.0])
    data = st.SerializeToString()
    back = pb.SolverState()
    back.ParseFromString(caffemodel.relink_solverstate(data, "/new/place.caffemodel"))
    assert (back.iter, back.current_step, back.learned_net) == (7, 2, "/new/place.caffemodel")
    assert list(back.history[0].data) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        caffemodel.relink_solverstate(data[:-3], "/x")


def test_one_progress_bar_per_phase_across_its_pieces(tiny, tmp_path, monkeypatch):
    """A phase run in pieces (snapshots every 5 of 12 iterations) shows one bar, which counts all 12 and so
    keeps its rate and time left; a resumed phase's bar starts where the snapshot left off."""
    from caffe_dc.pycaffe import retraining, solving
    root, base = tiny
    proto, model = pruned_model(root, base)
    bars = []
    real = solving.progress_bar

    def spy(total, done=0, desc="train", progress=True):
        bar = real(total, done, desc, progress)
        bars.append(bar)
        return bar
    monkeypatch.setattr(solving, "progress_bar", spy)
    retraining.retrain(proto, solver_param(proto, "unused"), model, str(tmp_path / "run"), iters=12, test_iter=1,
                       final_caffemodel=str(tmp_path / "final.caffemodel"), snapshot_every=5, progress=True)
    assert len(bars) == 1 and (bars[0].total, bars[0].n) == (12, 12)
