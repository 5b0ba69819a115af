"""The four nets' prototxts and solvers, and the registry that fills them in (real pycaffe).

The deploy nets are instantiated and their weight shapes checked against the
published architectures and the paper's #weights column; the LeNets' train_val
nets run forward, and their solvers step, on a tiny LMDB written here.
AlexNet's and VGG-16's train_val nets are only instantiated (never run), which
already proves Caffe accepts every layer in them.
"""
import math
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
caffe = pytest.importorskip("caffe")
lmdb = pytest.importorskip("lmdb")

from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.base import paper  # noqa: E402
from caffe_dc.pycaffe import rewrite  # noqa: E402
from caffe_dc.pycaffe.caffemodel import load_net_proto, load_solver_proto, save_net_proto, save_solver_proto  # noqa: E402
from caffe_dc.base.errors import InputError  # noqa: E402

caffe.set_mode_cpu()

# Weight blob shapes of the published architectures (Caffe's LeNet example, bvlc_alexnet,
# VGG_ILSVRC_16_layers), in net order.
VGG_CONVS = [("conv1_1", 64, 3), ("conv1_2", 64, 64), ("conv2_1", 128, 64), ("conv2_2", 128, 128),
             ("conv3_1", 256, 128), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
             ("conv4_1", 512, 256), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
             ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
SHAPES = {
    "lenet-300-100": [("ip1", (300, 784)), ("ip2", (100, 300)), ("ip3", (10, 100))],
    "lenet-5": [("conv1", (20, 1, 5, 5)), ("conv2", (50, 20, 5, 5)), ("ip1", (500, 800)), ("ip2", (10, 500))],
    "alexnet": [("conv1", (96, 3, 11, 11)), ("conv2", (256, 48, 5, 5)), ("conv3", (384, 256, 3, 3)),
                ("conv4", (384, 192, 3, 3)), ("conv5", (256, 192, 3, 3)),
                ("fc6", (4096, 9216)), ("fc7", (4096, 4096)), ("fc8", (1000, 4096))],
    "vgg16": [(n, (o, i, 3, 3)) for n, o, i in VGG_CONVS]
             + [("fc6", (4096, 25088)), ("fc7", (4096, 4096)), ("fc8", (1000, 4096))],
}
# Exact weight counts (biases excluded, as in the paper's tables) and the paper's rounded totals.
TOTALS = {"lenet-300-100": (266_200, "266K"), "lenet-5": (430_500, "431K"),
          "alexnet": (60_954_656, "61M"), "vgg16": (138_344_128, "138M")}
# TRAIN / TEST batch sizes, crop size and deploy input shape of each net.
BATCHES = {"lenet-300-100": (64, 100), "lenet-5": (64, 100), "alexnet": (256, 50), "vgg16": (32, 50)}
CROP = {"alexnet": 227, "vgg16": 224}
DEPLOY_INPUT = {"lenet-300-100": (64, 1, 28, 28), "lenet-5": (64, 1, 28, 28),
                "alexnet": (10, 3, 227, 227), "vgg16": (10, 3, 224, 224)}

def _saved_net(param, path):
    save_net_proto(param, path)
    return path


def _saved_solver(sp, path):
    save_solver_proto(sp, path)
    return path



def within_label(count, label):
    """Is ``count`` the paper's ``label`` ("235K", "0.5K", "38M") to within one unit of its last digit?

    The paper's own rounding is loose: VGG-16 conv2_2 (128*128*9 = 147,456) is
    printed 148K and AlexNet conv4 (663,552) 663K, so exact rounding is too strict.
    """
    num = label[:-1]
    unit = {"K": 1e3, "M": 1e6}[label[-1]]
    step = 10.0 ** -(len(num.split(".")[1]) if "." in num else 0)
    return abs(count / unit - float(num)) <= step


def make_lmdb(path, n, shape, seed=0):
    """``n`` random uint8 Datum records of ``shape`` (C, H, W), labels 0..9, as convert_imageset writes."""
    rng = np.random.RandomState(seed)
    c, h, w = shape
    env = lmdb.open(path, map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i in range(n):
            d = caffe_pb2.Datum(channels=c, height=h, width=w, label=i % 10,
                                data=rng.randint(0, 256, size=shape, dtype=np.uint8).tobytes())
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()
    return path


@pytest.fixture(scope="module")
def mnist_lmdbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    return make_lmdb(str(d / "train_lmdb"), 8, (1, 28, 28), 1), make_lmdb(str(d / "test_lmdb"), 8, (1, 28, 28), 2)


@pytest.fixture(scope="module")
def imagenet_lmdbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("imagenet")
    return make_lmdb(str(d / "train_lmdb"), 3, (3, 256, 256), 3), make_lmdb(str(d / "test_lmdb"), 3, (3, 256, 256), 4)


def weight_shapes(net_param):
    """(layer, weight shape) of every Convolution/InnerProduct, from the prototxt alone."""
    out = []
    for layer in net_param.layer:
        if layer.type == "Convolution":
            p = layer.convolution_param
            out.append((layer.name, (p.num_output, p.group, p.kernel_size[0], tuple(p.pad), tuple(p.stride))))
        elif layer.type == "InnerProduct":
            out.append((layer.name, (layer.inner_product_param.num_output,)))
    return out


# ---------------------------------------------------------------------------
# the registry

@pytest.mark.parametrize("alias,name", [
    ("lenet-300-100", "lenet-300-100"), ("lenet_300_100", "lenet-300-100"), ("LeNet-300-100", "lenet-300-100"),
    ("lenet5", "lenet-5"), ("LeNet-5", "lenet-5"), ("lenet_5", "lenet-5"),
    ("alexnet", "alexnet"), ("AlexNet", "alexnet"), ("bvlc_alexnet", "alexnet"),
    ("vgg16", "vgg16"), ("vgg-16", "vgg16"), ("VGG_16", "vgg16"),
])
def test_aliases_normalise(alias, name):
    assert nets.canonical(alias) == name
    assert nets.get(alias) is nets.NETS[name]


@pytest.mark.parametrize("bad", ["lenet", "vgg19", "resnet50", "", "lenet-300"])
def test_unknown_net_lists_the_known_ones(bad):
    with pytest.raises(InputError) as e:
        nets.get(bad)
    for known in ("lenet-300-100", "lenet-5", "alexnet", "vgg16"):
        assert known in str(e.value)


def test_registry_matches_paper_and_datasets():
    assert set(nets.NAMES) == set(paper.NETS)
    assert nets.get("lenet5").dataset == "mnist" and str(nets.get("lenet5").dataset) == "mnist"
    assert nets.get("vgg16").dataset is nets.Dataset.IMAGENET
    for name, spec in nets.NETS.items():
        assert spec.name == name
        for path in (spec.train_val, spec.deploy, spec.solver):
            assert os.path.isfile(path), path


def test_caffe_dc_home_moves_the_files(tmp_path, monkeypatch):
    for folder in ("prototxt", "solvers"):
        shutil.copytree(os.path.join(str(nets.home()), folder), str(tmp_path / folder))
    monkeypatch.setenv("CAFFE_DC_HOME", str(tmp_path))
    spec = nets.get("lenet-5")
    assert spec.train_val == str(tmp_path / "prototxt" / "lenet5_train_val.prototxt")
    assert load_solver_proto(spec.solver).base_lr == pytest.approx(0.01)
    monkeypatch.setenv("CAFFE_DC_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="CAFFE_DC_HOME"):
        nets.get("lenet-5").train_val


# ---------------------------------------------------------------------------
# the prototxts as files

@pytest.mark.parametrize("name", nets.NAMES)
def test_prunable_layers_are_the_papers_rows(name):
    spec = nets.NETS[name]
    paper_rows = [r.layer for r in paper.layer_rows(name) if r.layer != "total"]
    assert list(spec.prunable) == paper_rows
    assert rewrite.prunable_layers(load_net_proto(spec.train_val)) == paper_rows
    assert rewrite.prunable_layers(load_net_proto(spec.deploy)) == paper_rows
    assert [n for n, _ in SHAPES[name]] == paper_rows


@pytest.mark.parametrize("name", nets.NAMES)
def test_train_val_and_deploy_have_the_same_layers(name):
    spec = nets.NETS[name]
    tv, dp = load_net_proto(spec.train_val), load_net_proto(spec.deploy)
    assert tv.name == dp.name
    assert weight_shapes(tv) == weight_shapes(dp)
    skip_tv = {"Data", "Accuracy", "SoftmaxWithLoss"}
    body_tv = [(l.name, l.type, list(l.bottom), list(l.top)) for l in tv.layer if l.type not in skip_tv]
    body_dp = [(l.name, l.type, list(l.bottom), list(l.top)) for l in dp.layer if l.type not in ("Input", "Softmax")]
    assert body_tv == body_dp
    assert [(l.type, list(l.top)) for l in dp.layer if l.type in ("Input", "Softmax")] == [
        ("Input", ["data"]), ("Softmax", ["prob"])]
    assert tuple(dp.layer[0].input_param.shape[0].dim) == DEPLOY_INPUT[name]


@pytest.mark.parametrize("name", nets.NAMES)
def test_data_layers_and_accuracy(name):
    spec = nets.NETS[name]
    tv = load_net_proto(spec.train_val)
    data = nets.data_layers(tv)
    train, test = data["train"], data["test"]
    assert (train.data_param.source, test.data_param.source) == ("TRAIN_LMDB", "TEST_LMDB")
    assert (train.data_param.batch_size, test.data_param.batch_size) == BATCHES[name]
    assert train.data_param.backend == test.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert list(train.top) == list(test.top) == ["data", "label"]
    acc = {l.name: l for l in tv.layer if l.type == "Accuracy"}
    assert all(l.include[0].phase == caffe_pb2.TEST for l in acc.values())
    if spec.dataset == "mnist":
        for layer in (train, test):
            assert layer.transform_param.scale == pytest.approx(1 / 256)
            assert not layer.transform_param.crop_size and not layer.transform_param.mean_value
        assert set(acc) == {"accuracy"}
    else:
        assert train.transform_param.mirror and not test.transform_param.mirror
        for layer in (train, test):
            assert layer.transform_param.crop_size == CROP[name]
            assert len(layer.transform_param.mean_value) == 3 and not layer.transform_param.mean_file
        assert set(acc) == {"accuracy", "accuracy_top5"}
        assert acc["accuracy"].accuracy_param.top_k == 1 and acc["accuracy_top5"].accuracy_param.top_k == 5
    assert [l.name for l in tv.layer if l.type == "SoftmaxWithLoss"] == ["loss"]


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_imagenet_dropout_half_on_fc6_fc7(name):
    tv = load_net_proto(nets.NETS[name].train_val)
    drops = {l.name: (list(l.bottom), l.dropout_param.dropout_ratio) for l in tv.layer if l.type == "Dropout"}
    assert drops == {"drop6": (["fc6"], 0.5), "drop7": (["fc7"], 0.5)}


# ---------------------------------------------------------------------------
# solvers

@pytest.mark.parametrize("name", nets.NAMES)
def test_solvers_parse_with_placeholders(name):
    sp = load_solver_proto(nets.NETS[name].solver)
    assert (sp.net, sp.snapshot_prefix) == ("NET", "SNAPSHOT")
    assert sp.solver_mode == caffe_pb2.SolverParameter.CPU
    assert (sp.base_lr, sp.momentum, sp.weight_decay) == (pytest.approx(0.01), pytest.approx(0.9), pytest.approx(0.0005))
    if nets.NETS[name].dataset == "mnist":
        assert (sp.lr_policy, sp.gamma, sp.power) == ("inv", pytest.approx(1e-4), pytest.approx(0.75))
        assert (sp.max_iter, list(sp.test_iter), sp.test_interval, sp.display, sp.snapshot) == (10000, [100], 500, 100, 5000)
    else:
        assert (sp.lr_policy, sp.gamma, sp.stepsize) == ("step", pytest.approx(0.1), 100000)
        assert list(sp.test_iter) == [1000]  # x test batch 50 = 50k validation images
        assert sp.max_iter == {"alexnet": 450000, "vgg16": 370000}[name]
        # the effective batch is the paper's 256 for both nets
        assert BATCHES[name][0] * max(sp.iter_size, 1) == 256


def test_solver_for_fills_in_and_overrides(tmp_path):
    sp = nets.solver_for("lenet5", "tv.prototxt", str(tmp_path / "snap"), base_lr=0.001, max_iter=7,
                         test_iter=3, solver_mode="cpu", display=None, random_seed=5)
    assert sp.net == os.path.abspath("tv.prototxt")
    assert sp.snapshot_prefix == str(tmp_path / "snap")
    assert (sp.base_lr, sp.max_iter, list(sp.test_iter), sp.random_seed) == (pytest.approx(0.001), 7, [3], 5)
    assert sp.display == 100  # None leaves the recipe's value
    assert sp.lr_policy == "inv"
    sp2 = nets.solver_for("lenet5", "tv.prototxt", "snap", base_lr=1)  # an int for a float field is fine
    assert sp2.base_lr == 1.0
    path = _saved_solver(sp, str(tmp_path / "out" / "solver.prototxt"))
    back = caffe_pb2.SolverParameter()
    text_format.Merge(open(path).read(), back)
    assert back == sp


@pytest.mark.parametrize("overrides,fragment", [
    ({"base_learning_rate": 0.1}, "no field 'base_learning_rate'"),
    ({"max_iter": "many"}, "max_iter"),
    ({"max_iter": 1.5}, "max_iter"),
    ({"solver_mode": "tpu"}, "solver_mode"),
    ({"net_param": "x"}, "net_param"),
])
def test_solver_for_rejects_bad_overrides(overrides, fragment):
    with pytest.raises(InputError, match=fragment):
        nets.solver_for("lenet-5", "tv.prototxt", "snap", **overrides)


# ---------------------------------------------------------------------------
# source substitution

@pytest.mark.parametrize("name", nets.NAMES)
def test_train_val_with_sources(name, tmp_path):
    tr, te = tmp_path / "tr", tmp_path / "te"
    tr.mkdir()
    te.mkdir()
    original = load_net_proto(nets.NETS[name].train_val)
    got = nets.train_val_with_sources(name, str(tr), str(te), batch=3, test_batch=2)
    data = nets.data_layers(got)
    assert (data["train"].data_param.source, data["test"].data_param.source) == (str(tr), str(te))
    assert (data["train"].data_param.batch_size, data["test"].data_param.batch_size) == (3, 2)
    # nothing else moved: restoring the two sources and batches gives back the file exactly
    for layer, src, b in ((data["train"], "TRAIN_LMDB", BATCHES[name][0]), (data["test"], "TEST_LMDB", BATCHES[name][1])):
        layer.data_param.source = src
        layer.data_param.batch_size = b
    assert got == original
    # without overrides the recipe's batch sizes stay
    plain = nets.data_layers(nets.train_val_with_sources(name, str(tr), str(te)))
    assert (plain["train"].data_param.batch_size, plain["test"].data_param.batch_size) == BATCHES[name]
    written = _saved_net(got, str(tmp_path / "tv.prototxt"))
    assert load_net_proto(written) == got


def test_train_val_with_sources_errors(tmp_path):
    (tmp_path / "tr").mkdir()
    tr = str(tmp_path / "tr")
    with pytest.raises(InputError, match="no such test LMDB"):
        nets.train_val_with_sources("lenet-5", tr, str(tmp_path / "missing"))
    with pytest.raises(InputError, match="no such training LMDB"):
        nets.train_val_with_sources("lenet-5", str(tmp_path / "missing"), tr)
    for bad in (0, -4, 2.5, True, "64", float("nan")):
        with pytest.raises(InputError, match="positive integer"):
            nets.train_val_with_sources("lenet-5", tr, tr, batch=bad)
    with pytest.raises(InputError, match="unknown net"):
        nets.train_val_with_sources("lenet-7", tr, tr)


# ---------------------------------------------------------------------------
# pycaffe

@pytest.mark.parametrize("name", nets.NAMES)
def test_deploy_weight_shapes_match_the_paper(name):
    spec = nets.NETS[name]
    net = caffe.Net(spec.deploy, caffe.TEST)  # VGG-16 allocates ~550 MB here, once
    try:
        assert net.blobs["data"].data.shape == DEPLOY_INPUT[name]
        assert net.blobs["prob"].data.shape == (DEPLOY_INPUT[name][0], 10 if spec.dataset == "mnist" else 1000)
        shapes = [(n, p[0].data.shape) for n, p in net.params.items()]
        assert shapes == SHAPES[name]
        assert all(net.params[n][1].data.shape == (s[0],) for n, s in SHAPES[name])
    finally:
        del net
    counts = {n: int(np.prod(s)) for n, s in SHAPES[name]}
    for row in paper.layer_rows(name):
        if row.layer == "total":
            assert sum(counts.values()) == TOTALS[name][0]
            assert within_label(TOTALS[name][0], TOTALS[name][1])
        else:
            assert within_label(counts[row.layer], row.weights_label), (row.layer, counts[row.layer], row.weights_label)


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_lenet_train_val_runs_and_solver_steps(name, mnist_lmdbs, tmp_path):
    tr, te = mnist_lmdbs
    param = nets.train_val_with_sources(name, tr, te, batch=4, test_batch=4)
    tv = _saved_net(param, str(tmp_path / "train_val.prototxt"))
    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(tv, phase)
        out = net.forward()
        assert net.blobs["data"].data.shape == (4, 1, 28, 28)
        assert 0 <= net.blobs["data"].data.min() and net.blobs["data"].data.max() < 1  # scaled by 1/256
        assert math.isfinite(float(out["loss"])) and float(out["loss"]) > 0
        if phase == caffe.TEST:
            assert 0.0 <= float(out["accuracy"]) <= 1.0
        else:
            assert "accuracy" not in out
    sp = nets.solver_for(name, tv, str(tmp_path / "snap"), max_iter=2, test_iter=1, test_interval=1000, snapshot=0)
    solver = caffe.get_solver(_saved_solver(sp, str(tmp_path / "solver.prototxt")))
    w0 = solver.net.params["ip1"][0].data.copy()
    solver.step(2)
    assert solver.iter == 2
    assert math.isfinite(float(solver.net.blobs["loss"].data))
    assert not np.array_equal(w0, solver.net.params["ip1"][0].data)


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_imagenet_train_val_instantiates(name, imagenet_lmdbs, tmp_path):
    # Instantiate only (no forward): proves Caffe accepts every layer and the 256 -> crop
    # Data layers, with the published weight shapes.
    tr, te = imagenet_lmdbs
    param = nets.train_val_with_sources(name, tr, te, batch=1, test_batch=2)
    tv = _saved_net(param, str(tmp_path / "train_val.prototxt"))
    net = caffe.Net(tv, caffe.TEST)
    try:
        assert net.blobs["data"].data.shape == (2, 3, CROP[name], CROP[name])
        assert {"loss", "accuracy", "accuracy_top5"} <= set(net.outputs)
        assert [(n, p[0].data.shape) for n, p in net.params.items()] == SHAPES[name]
    finally:
        del net


def test_exact_batch_divides_the_split():
    assert nets.exact_batch(10000, 100) == 100
    assert nets.exact_batch(2004, 100) == 12          # 2004 = 12 * 167: no double-counted images
    assert nets.exact_batch(10007, 100) == 1          # a prime count: batch 1, still exact
    assert nets.exact_batch(7, 100) == 7
    with pytest.raises(InputError):
        nets.exact_batch(0, 100)
