"""Prune rounds that start from a layer-wise reconstruction (a schedule's ``reconstruct``): on a small net, each
pruned layer's output brought nearer the dense net's; at --quick scale, every round reconstructed, the key in the
stage's inputs, and a killed run resumed to the same bytes."""
import json
import os

import numpy as np
import pytest

from caffe_dc.algorithms import pruning  # noqa: E402
from caffe_dc.algorithms import schedule as schedules  # noqa: E402
from caffe_dc.base.blobs import MASK, blob_name  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.pycaffe import calibration as cal  # noqa: E402
from caffe_dc.base.errors import InputError  # noqa: E402
from caffe_dc.pycaffe import caffemodel, datasets, layerwise  # noqa: E402
from caffe_dc.pycaffe.validate import caffe_available  # noqa: E402
from conftest import assert_clean_error, killed_in_chunk, quick_run_with, run_cli  # noqa: E402

DENSITY = {"conv1": 0.6, "conv2": 0.4, "ip1": 0.15, "ip2": 0.5}
NEXT = {"conv1": "conv2", "conv2": "ip1", "ip1": "ip2"}   # the layer that reads each one's output (after its ReLU)
needs_caffe = pytest.mark.skipif(not caffe_available(), reason="needs pycaffe")


@pytest.mark.parametrize("value, message", [
    ({"images": 50}, "reconstruct.images must be an integer in 100.."),
    ({"images": 1000.5}, "reconstruct.images must be an integer"),
    ({"images": True}, "reconstruct.images must be an integer"),
    ({"images": 1000, "seed": 1}, "reconstruct must be an object with images"),
    (1000, "reconstruct must be an object with images")])
def test_a_bad_reconstruct_key_is_one_line_naming_it(value, message):
    doc = dict(schedules.read_document(schedules.builtin("lenet-300-100", "quick")), reconstruct=value)
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        schedules.from_dict(doc, ["ip1", "ip2", "ip3"])


def test_the_reconstruct_key_round_trips_and_is_off_unless_a_preset_chose_it(tmp_path):
    doc = schedules.read_document(schedules.builtin("lenet-300-100", "quick"))
    s = schedules.from_dict(dict(doc, reconstruct={"images": 1000}), ["ip1", "ip2", "ip3"])
    again = schedules.load_schedule(schedules.save_schedule(s, str(tmp_path / "s.json")), ["ip1", "ip2", "ip3"])
    assert s.reconstruct == again.reconstruct == {"images": 1000}
    # the one preset chosen with it on validation (docs/results.md); the others are unchanged by the key
    presets = {(net, preset): schedules.read_document(schedules.builtin(net, preset)).get("reconstruct")
               for net in ("lenet-300-100", "lenet-5") for preset in ("quick", "full")}
    assert presets == {("lenet-300-100", "quick"): None, ("lenet-300-100", "full"): None,
                       ("lenet-5", "quick"): None, ("lenet-5", "full"): {"images": 5000}}
    assert "reconstruct" not in schedules.from_dict(doc, ["ip1", "ip2", "ip3"]).to_dict()


@needs_caffe
def test_too_few_images_on_the_command_line_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--data", "fashion-mnist", "--data-root", tmp_path / "data",
                "--reconstruct", "50", "--out", out, cwd=str(tmp_path))
    assert p.returncode == 2 and not out.exists() and not (tmp_path / "data").exists(), p.stderr
    assert_clean_error(p, "reconstruct.images must be an integer in 100..")


def pruned(params, masks):
    out = dict(params)
    for n, m in masks.items():
        lp = params[n]
        out[n] = LayerParams(lp.type, [np.where(m, lp.blobs[0], np.float32(0))] + list(lp.blobs[1:]))
    return out


def layer_errors(fwd, params, dense, x):
    """Per pruned layer, the mean squared difference of its output (as the next layer reads it; the scores for
    the last) from the dense net's, on the images ``x``."""
    def outputs(p):
        for n in fwd.param_names():
            fwd.set(n, p[n].blobs)
        got = fwd.inputs(x, list(NEXT.values()))
        out = {n: got[nxt] for n, nxt in NEXT.items()}
        out["ip2"] = fwd.scores(x)
        return out
    ref, now = outputs(dense), outputs(params)
    return {n: float(np.mean((now[n] - ref[n]) ** 2)) for n in ref}


@needs_caffe
def test_reconstruction_lowers_every_pruned_layers_output_error_on_images_it_did_not_see(tmp_path):
    """From the dense net pruned by magnitude, each layer refitted in order (seeing the refitted layers before
    it): its output and every later one nearer the dense net's on held-out images, the pruned weights still
    zero, each bias corrected."""
    from test_posthoc import tiny_model

    _, _, params = tiny_model(tmp_path)
    from caffe_dc.codec import caffe_proto

    net = caffe_proto.parse_net_text(open(str(tmp_path / "deploy.prototxt")).read(), "tiny")
    x = np.random.default_rng(5).random((500, 1, 8, 8)).astype(np.float32)
    masks = {n: pruning.density_mask(params[n].blobs[0], d) for n, d in DENSITY.items()}
    start = pruned(params, masks)
    fwd = cal.forward_for(net, (100, 1, 8, 8), params, str(tmp_path))
    out, shares = layerwise.reconstruct(layerwise.Images(fwd, x[:400]), layerwise.layers_of(net, params), params,
                                        start, masks)
    assert shares == {n: 1.0 for n in DENSITY}   # 400 images carry every channel's kept weights
    for n, m in masks.items():
        w = out[n].blobs[0]
        assert not w[~m].any() and not np.array_equal(w[m], params[n].blobs[0][m]), n
        assert not np.array_equal(out[n].blobs[1], params[n].blobs[1]), n
    plain, refit = (layer_errors(fwd, p, params, x[400:]) for p in (start, out))
    for n in DENSITY:
        assert refit[n] < 0.7 * plain[n], (n, refit[n], plain[n])


@needs_caffe
def test_a_later_round_keeps_its_retrained_weights_where_the_refit_cannot_reach(tmp_path):
    """A round after the first starts from retrained weights, not the dense ones: with too few images for ip1's
    kept weights, its channels keep the start's (only the bias is corrected), while the rest are refitted to
    the dense net's outputs."""
    from test_posthoc import tiny_model

    _, _, params = tiny_model(tmp_path)
    from caffe_dc.codec import caffe_proto

    net = caffe_proto.parse_net_text(open(str(tmp_path / "deploy.prototxt")).read(), "tiny")
    rng = np.random.default_rng(6)
    retrained = {n: LayerParams(lp.type, [b + 0.05 * rng.standard_normal(b.shape).astype(np.float32) for b in lp.blobs])
                 for n, lp in params.items()}
    dens = dict(DENSITY, ip1=0.5)       # 48 of 96 inputs: 196 rows a channel needed, 100 given
    masks = {n: pruning.density_mask(retrained[n].blobs[0], d) for n, d in dens.items()}
    start = pruned(retrained, masks)
    x = rng.random((100, 1, 8, 8)).astype(np.float32)
    fwd = cal.forward_for(net, (100, 1, 8, 8), params, str(tmp_path))
    out, shares = layerwise.reconstruct(layerwise.Images(fwd, x), layerwise.layers_of(net, params), params, start,
                                        masks)
    assert shares["ip1"] == 0.0 and shares["conv1"] == 1.0
    np.testing.assert_array_equal(out["ip1"].blobs[0], start["ip1"].blobs[0])
    assert not np.array_equal(out["ip1"].blobs[1], start["ip1"].blobs[1])
    assert not np.array_equal(out["conv1"].blobs[0], start["conv1"].blobs[0])
    before, after = (layer_errors(fwd, p, params, x) for p in (start, out))
    assert after["conv1"] < before["conv1"]


# ---------------------------------------------------------------- the prune stage, at --quick scale

needs_data = pytest.mark.skipif(not (caffe_available() and os.path.isdir(datasets.FASHION_MNIST_DIR)),
                                reason="needs pycaffe and dataset-fashion-mnist")
IMAGES = 500


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The quick run without the key, then the same folder with it: (root, schedule, run folder, doc, the two
    processes)."""
    root = tmp_path_factory.mktemp("reconstruct")
    doc = schedules.read_document(schedules.builtin("lenet-300-100", "quick"))
    doc.update(iters_per_round=200, snapshot_every=100, finetune_iters=100, reference_iters=1000)
    _, out, plain = quick_run_with(root, doc)
    plain_state = json.load(open(str(out / "pipeline.json")))
    doc["reconstruct"] = {"images": IMAGES}
    sched, out, p = quick_run_with(root, doc)
    return root, sched, out, plain_state, p


@needs_data
def test_every_round_starts_from_a_reconstruction_recorded_in_the_stages_inputs(runs):
    root, _, out, plain_state, p = runs
    assert "[5/12] prune: settings changed: reconstruct; redoing it" in p.stdout
    state = json.load(open(str(out / "pipeline.json")))
    assert state["reference"]["fingerprint"] == plain_state["reference"]["fingerprint"]
    assert state["prune"]["fingerprint"] != plain_state["prune"]["fingerprint"]
    assert state["prune"]["config"]["reconstruct"] == {"images": IMAGES}
    assert "reconstruct" not in plain_state["prune"]["config"]
    ref = caffemodel.load_params(str(out / "reference" / "lenet-300-100.caffemodel"))
    base = caffemodel.load_net_proto(str(out / "train_val.prototxt"))
    info = datasets.prepare(data="fashion-mnist", out_root=str(root / "data"), quiet=True)
    for r in (1, 2):
        m = json.load(open(str(out / "prune" / ("round%d" % r) / "metrics.json")))
        assert m["reconstruction"]["images"] == IMAGES and set(m["reconstruction"]["refit_share"]) == {"ip1", "ip2", "ip3"}
    # round 1's start against the reference pruned by magnitude to the same masks, on training images the
    # reconstruction did not read: each layer's output nearer the reference's
    start = caffemodel.load_params(str(out / "prune" / "round1" / "pruned.caffemodel"))
    masks = {n: start[blob_name(n, MASK)].blobs[0] != 0 for n in ("ip1", "ip2", "ip3")}
    calib = cal.load(info.split("train")[0], base, None, cal.preprocess_from(base, cal.Preprocess(), ()), None)
    x = calib.images[np.setdiff1d(np.arange(calib.images.shape[0]), cal._sample(calib.images.shape[0], IMAGES, 0))[:500]]
    fwd = cal.forward_for(base, x.shape, ref, str(root))

    def errors(p):
        for n in fwd.param_names():
            fwd.set(n, p[n].blobs)
        got = dict(fwd.inputs(x, ["ip2", "ip3"]), scores=fwd.scores(x))
        return got
    dense, plain, rec = errors(ref), errors(pruned(ref, masks)), errors(start)
    for k in dense:
        e_plain, e_rec = (float(np.mean((o[k] - dense[k]) ** 2)) for o in (plain, rec))
        assert e_rec < 0.8 * e_plain, (k, e_rec, e_plain)


@needs_data
def test_a_killed_run_with_reconstruction_resumes_to_the_same_bytes(runs, tmp_path, monkeypatch):
    """Killed in round 2's first retraining piece, before its snapshot: the rerun skips round 1, reconstructs
    round 2's start again from round 1's retrained net, and ends in the very files of the run never killed."""
    from caffe_dc.pipeline.reproduce import Pipeline
    from caffe_dc.stages.run import DataOptions, RunOptions

    root, sched, out, _, _ = runs
    ref = str(out / "reference" / "lenet-300-100.caffemodel")
    opts = RunOptions(net="lenet-300-100", quick=True, schedule=str(sched), weights=ref, out=str(tmp_path / "run"),
                      data=DataOptions(data="fashion-mnist", data_root=str(root / "data")))
    calls = killed_in_chunk(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(opts, progress=False).run()
    assert calls == ["prune round 1", "prune round 1", "prune round 2"]
    assert not os.path.exists(str(tmp_path / "run" / "prune" / "round2" / "retrained.caffemodel"))
    Pipeline(opts, progress=False).run()
    for f in ["prune/round2/pruned.caffemodel", "prune/pruned.caffemodel", "model.dcz"] + \
             ["prune/round%d/retrained.caffemodel" % r for r in (1, 2)]:
        with open(str(out / f), "rb") as a, open(str(tmp_path / "run" / f), "rb") as b:
            assert a.read() == b.read(), f
    first = json.load(open(str(out / "prune" / "round2" / "metrics.json")))
    again = json.load(open(str(tmp_path / "run" / "prune" / "round2" / "metrics.json")))
    assert again["reconstruction"] == first["reconstruction"]
