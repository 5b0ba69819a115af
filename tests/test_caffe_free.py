"""The codec without Caffe: caffemodel/prototxt I/O, shapes from the prototxt, and the codec commands.

These tests need numpy and protobuf only. On the host's clean venv (.ci/run)
pycaffe is absent; in the image each command is also run with pycaffe hidden
(``sys.modules["caffe"] = None``), so both paths are exercised everywhere.
The comparisons against pycaffe itself are in test_caffe_free_vs_caffe.py.
"""
import collections
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import need_module  # noqa: E402

need_module("google.protobuf", "protobuf")

from caffe_dc.base.errors import InputError  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.codec import caffe_proto, caffemodel, net_shapes  # noqa: E402
from caffe_dc.codec.caffemodel import enc_varint, field, key  # noqa: E402
from conftest import REPO, assert_clean_error, run_cli  # noqa: E402

ZOO = os.path.join(REPO, "prototxt")
RESULTS = os.path.join(REPO, "results")

# A small deploy net with everything a foreign ResNet-like caffemodel has: BatchNorm + Scale, a grouped
# and a dilated convolution, a residual Eltwise, padded pooling that rounds up, a Concat and an IP at axis 1.
BN_NET = """name: "bn-net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 15 dim: 15 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "conv1_bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "conv1_scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 4 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "pool" bottom: "pool" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
BN_SHAPES = {"conv1": [(8, 3, 3, 3)], "conv1_bn": [(8,), (8,), (1,)], "conv1_scale": [(8,), (8,)],
             "conv2": [(8, 2, 3, 3), (8,)], "fc": [(5, 16 * 8 * 8), (5,)]}


def bn_params(seed=0):
    rs = np.random.RandomState(seed)
    out = collections.OrderedDict()
    types = {"conv1": "Convolution", "conv1_bn": "BatchNorm", "conv1_scale": "Scale", "conv2": "Convolution",
             "fc": "InnerProduct"}
    for name, shapes in BN_SHAPES.items():
        out[name] = LayerParams(types[name], [rs.randn(*s).astype(np.float32) for s in shapes])
    out["conv1_bn"].blobs[2][...] = 1.0
    return out


def cli_without_caffe(*args, cwd=None):
    """`caffe-dc ARGS` in a child where pycaffe cannot be imported, installed or not."""
    return run_cli(*args, cwd=cwd, timeout=300, caffe=False)


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].type == b[k].type and len(a[k].blobs) == len(b[k].blobs)
        for x, y in zip(a[k].blobs, b[k].blobs):
            assert x.shape == y.shape and np.array_equal(x.view(np.uint32), np.asarray(y, np.float32).view(np.uint32))


# --- caffemodel bytes ---------------------------------------------------------------------------------------

def test_caffemodel_round_trip_keeps_names_types_shapes_and_bits():
    p = bn_params()
    p["odd"] = LayerParams("Parameter", [np.array(3.5, np.float32), np.zeros((0, 4), np.float32),
                                         np.array([0.0, -0.0, np.inf, 1e-45], np.float32)])
    back = caffemodel.parse_params(caffemodel.params_to_bytes(p, name="n"))
    _same(p, back)


def _v1_blob(dims, values, double=False, packed=True):
    legacy = b"".join(key(i, 0) + enc_varint(d) for i, d in zip((1, 2, 3, 4), dims))
    dt = "<f8" if double else "<f4"
    num = 8 if double else 5
    if packed:
        data = field(num, np.asarray(values, dt).tobytes())
    else:
        data = b"".join(key(num, 1 if double else 5) + np.asarray([v], dt).tobytes() for v in values)
    return legacy + data


def test_v1_layers_legacy_dims_double_and_unpacked_data():
    """A V1 caffemodel (``layers``, field 2, enum types), as old Caffe wrote them."""
    ip = field(4, b"ip") + key(5, 0) + enc_varint(14) + field(6, _v1_blob((1, 1, 2, 3), range(6), double=True))
    conv = field(4, b"conv") + key(5, 0) + enc_varint(4) + field(6, _v1_blob((2, 1, 1, 1), [1.5, -2], packed=False))
    relu = field(4, b"relu") + key(5, 0) + enc_varint(18)
    out = caffemodel.parse_params(field(1, b"old") + field(2, conv) + field(2, relu) + field(2, ip))
    assert list(out) == ["conv", "ip"]
    assert out["ip"].type == "InnerProduct" and out["ip"].blobs[0].shape == (1, 1, 2, 3)
    assert out["ip"].blobs[0].dtype == np.float32 and out["ip"].blobs[0][0, 0, 1, 2] == 5
    assert out["conv"].type == "Convolution" and out["conv"].blobs[0].ravel().tolist() == [1.5, -2]


@pytest.mark.parametrize("junk", [b"\x0a", b"\xa2\x06\xff\xff\xff\x0f", b"\x07\x07\x07", b"\xa2\x06\x02\x3a\x05"])
def test_malformed_caffemodel_is_an_input_error(junk):
    with pytest.raises(InputError):
        caffemodel.parse_params(junk)


def test_declared_shape_checked_before_allocating():
    dims = field(1, b"".join(enc_varint(d) for d in (1 << 20, 1 << 20)))
    layer = field(1, b"x") + field(2, b"InnerProduct") + field(7, field(7, dims))
    with pytest.raises(InputError, match="needs"):
        caffemodel.parse_params(field(100, layer))
    small = field(1, b"x") + field(7, field(7, field(1, enc_varint(1000))) + field(5, bytes(4000)))
    with pytest.raises(InputError, match="CAFFE_DC_MAX_CAFFEMODEL_BYTES"):
        caffemodel.parse_params(field(100, small), max_bytes=3999)


# --- prototxts and shapes --------------------------------------------------------------------------------

def test_prototxt_fields_and_skipped_unknown_fields():
    net = caffe_proto.parse_net_text(BN_NET.replace('top: "prob"', 'top: "prob" loss_param { normalize: false }'), "x")
    assert [l.name for l in net.layer][:3] == ["data", "conv1", "conv1_bn"]
    assert net.layer[8].pooling_param.pool == net.layer[8].pooling_param.MAX
    assert net.layer[1].convolution_param.bias_term is False and net.layer[3].scale_param.bias_term is True
    with pytest.raises(InputError, match="does not parse"):
        caffe_proto.parse_net_text('layer { name: "a" type: }', "bad.prototxt")


def test_shapes_from_the_prototxt():
    assert dict(net_shapes.param_shapes(caffe_proto.parse_net_text(BN_NET, "x")).params) == BN_SHAPES
    lenet = net_shapes.param_shapes(caffe_proto.load_net_text(os.path.join(ZOO, "lenet5_deploy.prototxt")))
    assert lenet.params == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                            "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]} and not lenet.unknown
    vgg = net_shapes.param_shapes(caffe_proto.load_net_text(os.path.join(ZOO, "vgg16_deploy.prototxt")))
    assert vgg.params["fc6"] == [(4096, 25088), (4096,)] and not vgg.unknown
    # a Data layer's shape is in its data set: left to Caffe, and said so
    tv = net_shapes.param_shapes(caffe_proto.load_net_text(os.path.join(ZOO, "lenet5_train_val.prototxt")))
    assert not tv.params and set(tv.unknown) == {"conv1", "conv2", "ip1", "ip2"}


# --- the commands ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("net", ["lenet-300-100", "lenet-5"])
def test_decode_and_load_arrays_without_caffe(tmp_path, net):
    import caffe_dc

    dcz = os.path.join(RESULTS, net, "model.dcz")
    out = tmp_path / "m.caffemodel"
    p = cli_without_caffe("decode", dcz, "-o", out, "--verify")
    assert p.returncode == 0, p.stderr
    assert "bit-identical" in p.stdout
    arrays = caffe_dc.load_arrays(dcz)
    params = caffemodel.load_params(str(out))
    assert list(arrays) == list(params)
    for name, blobs in arrays.items():
        assert all(np.array_equal(a, b) for a, b in zip(blobs, params[name].blobs))
    p = cli_without_caffe("inspect", dcz)
    assert p.returncode == 0 and "paper (%s" % net in p.stdout, p.stderr


def test_encode_with_and_without_prototxt_same_bytes(tmp_path):
    """encode without a prototxt takes names and types from the caffemodel: the same file as with one."""
    dcz = os.path.join(RESULTS, "lenet-5", "model.dcz")
    model = tmp_path / "m.caffemodel"
    assert cli_without_caffe("decode", dcz, "-o", model).returncode == 0
    outs = []
    for args in ([os.path.join(ZOO, "lenet5_deploy.prototxt"), model], [model]):
        outs.append(tmp_path / ("%d.dcz" % len(outs)))
        p = cli_without_caffe("encode", *args, "-o", outs[-1])
        assert p.returncode == 0, p.stderr
        assert "note:" not in p.stdout   # every shape was checked
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_post_hoc_bn_net_same_bytes_with_and_without_caffe(tmp_path, cli):
    """A foreign caffemodel with BatchNorm/Scale: pruned and quantized post hoc, BN blobs raw."""
    proto, model = tmp_path / "bn.prototxt", tmp_path / "bn.caffemodel"
    proto.write_text(BN_NET)
    caffemodel.save_params(bn_params(), str(model))
    outs = []
    for run in (cli_without_caffe, cli):
        for args in ([proto, model], [model]):
            outs.append(tmp_path / ("%d.dcz" % len(outs)))
            p = run("encode", *args, "-o", outs[-1], "--density", "0.5")
            assert p.returncode == 0, p.stderr
    assert all(o.read_bytes() == outs[0].read_bytes() for o in outs[1:])
    back = tmp_path / "back.caffemodel"
    assert cli_without_caffe("decode", outs[0], "-o", back).returncode == 0
    got, ref = caffemodel.load_params(str(back)), bn_params()
    for name in ("conv1_bn", "conv1_scale"):   # passed through raw, bit for bit
        assert all(np.array_equal(a, b) for a, b in zip(got[name].blobs, ref[name].blobs))
    assert np.count_nonzero(got["fc"].blobs[0]) <= ref["fc"].blobs[0].size // 2


def test_encode_refuses_a_caffemodel_of_another_shape_without_caffe(tmp_path):
    proto, model = tmp_path / "bn.prototxt", tmp_path / "bn.caffemodel"
    proto.write_text(BN_NET.replace("num_output: 5", "num_output: 6"))
    caffemodel.save_params(bn_params(), str(model))
    out = tmp_path / "x.dcz"
    p = cli_without_caffe("encode", proto, model, "-o", out)
    assert_clean_error(p, "layer 'fc' has blobs")
    assert p.returncode == 2 and not out.exists()


def test_codec_commands_import_no_plotting_or_data_packages(tmp_path):
    """The CLI and the codec commands run with numpy and protobuf alone."""
    code = ("import sys; sys.modules['caffe'] = None\n"
            "from caffe_dc.cli import main\n"
            "rc = main(['inspect', %r])\n"
            "print(sorted(m for m in ('matplotlib', 'tqdm', 'lmdb', 'sklearn', 'scipy') if m in sys.modules))"
            % os.path.join(RESULTS, "lenet-5", "model.dcz"))
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, universal_newlines=True, env=env)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]", r.stdout


@pytest.mark.parametrize("command", ["train", "prune", "quantize", "reproduce", "compress", "sensitivity"])
def test_training_commands_say_they_need_caffe(tmp_path, command):
    """Each says so first, whatever else is wrong (here: none of the files exist), and writes nothing."""
    args = {"train": ["lenet-5"], "prune": ["lenet-5", "x.caffemodel"], "quantize": ["lenet-5", "x.caffemodel"],
            "reproduce": ["lenet-5"], "compress": ["--solver", "s.prototxt", "--weights", "x.caffemodel"],
            "sensitivity": ["lenet-5", "x.caffemodel", "-o", "out"]}[command]
    p = cli_without_caffe(command, *args, cwd=str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("caffe-dc %s: error: pycaffe is not importable here" % command), p.stderr
    assert p.stderr.strip().endswith("run caffe-dc through ./dc") and len(p.stderr.strip().splitlines()) == 1
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("extra,fragment", [
    ('layer { name: "cat" type: "Concat" bottom: "data" bottom: "fc" top: "cat" }', "Concat inputs"),
    ('layer { name: "s2" type: "Eltwise" bottom: "conv1" bottom: "pool" top: "s2" }', "Eltwise inputs"),
])
def test_shapes_caffe_would_abort_on_are_input_errors(extra, fragment):
    with pytest.raises(InputError, match=fragment):
        net_shapes.param_shapes(caffe_proto.parse_net_text(BN_NET + extra + "\n", "x"))
