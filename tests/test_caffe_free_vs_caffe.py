"""Our Caffe-free proto path against pycaffe: declarations, bytes written, bytes read, shapes inferred."""
import os

import numpy as np
import pytest

pytest.importorskip("caffe")

from google.protobuf import text_format  # noqa: E402

from caffe_dc.codec import caffe_proto, caffemodel, net_shapes  # noqa: E402
from caffe_dc.pycaffe import caffemodel as pycaffe_io  # noqa: E402
from caffe_dc.pycaffe import validate  # noqa: E402
from conftest import REPO  # noqa: E402
from test_caffe_free import BN_NET, bn_params  # noqa: E402

pb = pycaffe_io.caffe_pb2()
ZOO = [os.path.join(REPO, "prototxt", f) for f in sorted(os.listdir(os.path.join(REPO, "prototxt")))]


def _ours():
    return caffe_proto.messages()


@pytest.mark.parametrize("name", [n for n, _ in caffe_proto._MESSAGES])
def test_every_declared_field_is_caffes(name):
    """Same name -> same number, label, type, default and enum values as caffe.proto's."""
    mine = getattr(_ours(), name).DESCRIPTOR
    theirs = getattr(pb, name).DESCRIPTOR
    for f in mine.fields:
        t = theirs.fields_by_name[f.name]
        assert (f.number, f.label, f.type, f.default_value) == (t.number, t.label, t.type, t.default_value), \
            (name, f.name)
        if f.enum_type is not None:
            assert sorted((v.name, v.number) for v in f.enum_type.values) == \
                sorted((v.name, v.number) for v in t.enum_type.values), (name, f.name)


def _pycaffe_bytes(params, name):
    """How caffe-dc wrote a caffemodel through pycaffe's protobuf before codec.caffemodel (the oracle)."""
    parts = [pb.NetParameter(name=name).SerializeToString()]
    for lname, lp in params.items():
        layer = [pb.LayerParameter(name=lname, type=lp.type).SerializeToString()]
        for arr in lp.blobs:
            shape = pb.BlobShape(dim=[int(d) for d in arr.shape]).SerializeToString()
            payload = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            layer.append(caffemodel.field(7, caffemodel.field(7, shape) + caffemodel.field(5, payload)))
        parts.append(caffemodel.field(100, b"".join(layer)))
    return b"".join(parts)


def test_written_bytes_identical_to_pycaffes(tmp_path):
    import caffe

    params = bn_params()
    params["scalar"] = caffemodel.LayerParams("Parameter", [np.array(2.0, np.float32), np.zeros(0, np.float32)])
    ours = caffemodel.params_to_bytes(params, "bn-net")
    assert ours == _pycaffe_bytes(params, "bn-net")
    # and protobuf reads them as the same message Caffe's own serialiser would have made
    net = pb.NetParameter()
    net.ParseFromString(ours)
    assert caffemodel.parse_params(net.SerializeToString()).keys() == params.keys()
    del params["scalar"]
    proto, path = tmp_path / "bn.prototxt", tmp_path / "bn.caffemodel"
    proto.write_text(BN_NET)
    caffemodel.save_params(params, str(path))
    cnet = caffe.Net(str(proto), caffe.TEST, weights=str(path))
    for name, lp in params.items():
        for d, s in zip(cnet.params[name], lp.blobs):
            assert np.array_equal(d.data.view(np.uint32), s.view(np.uint32))


def test_reads_what_protobuf_writes_in_every_legacy_form():
    net = pb.NetParameter(name="v1")
    l1 = net.layers.add(name="ip", type=pb.V1LayerParameter.INNER_PRODUCT)
    l1.blobs.add(num=1, channels=1, height=2, width=3).double_data.extend(range(6))
    l2 = net.layers.add(name="conv", type=pb.V1LayerParameter.CONVOLUTION)
    b = l2.blobs.add()
    b.shape.dim.extend([2, 1])
    b.data.extend([0.5, -1])
    got = caffemodel.parse_params(net.SerializeToString())
    assert got["ip"].type == "InnerProduct" and got["ip"].blobs[0].ravel().tolist() == list(range(6))
    assert got["conv"].type == "Convolution" and got["conv"].blobs[0].tolist() == [[0.5], [-1]]
    for value, (enum_name, v2) in caffe_proto.V1_TYPES.items():
        assert pb.V1LayerParameter.LayerType.Name(value) == enum_name


@pytest.mark.parametrize("path", ZOO + ["bn"], ids=[os.path.basename(p) for p in ZOO] + ["bn-net"])
def test_text_parse_and_shapes_agree_with_caffe(path, tmp_path):
    if path == "bn":
        path = str(tmp_path / "bn.prototxt")
        open(path, "w").write(BN_NET)
    text = open(path).read()
    theirs = pb.NetParameter()
    text_format.Merge(text, theirs)
    mine = caffe_proto.parse_net_text(text, path)
    via_caffe = _ours().NetParameter()
    via_caffe.ParseFromString(theirs.SerializeToString())   # Caffe's fields our subset lacks become unknown
    assert text_format.MessageToString(mine) == text_format.MessageToString(via_caffe)
    found = net_shapes.param_shapes(mine)
    if "deploy" in path or "bn" in path:
        assert not found.unknown
        caffe_shapes = validate.net_shapes(theirs, "TEST")
        assert dict(found.params) == caffe_shapes
        assert list(found.params) == list(caffe_shapes)


@pytest.mark.parametrize("variant", [
    'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
    'pooling_param { pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 }',
    'pooling_param { pool: MAX global_pooling: true }',
])
def test_pooling_variants_agree_with_caffe(variant):
    text = BN_NET.replace("pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }", variant)
    assert variant in text
    mine = net_shapes.param_shapes(caffe_proto.parse_net_text(text, "x"))
    theirs = pb.NetParameter()
    text_format.Merge(text, theirs)
    assert dict(mine.params) == validate.net_shapes(theirs, "TEST")


def test_deconvolution_transposed_ip_and_flatten_agree_with_caffe():
    text = """layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 7 } } }
layer { name: "up" type: "Deconvolution" bottom: "d" top: "up" convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
layer { name: "flat" type: "Flatten" bottom: "up" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 3 transpose: true } }
layer { name: "sc" type: "Scale" bottom: "fc" top: "sc" scale_param { axis: 0 num_axes: -1 } }
"""
    theirs = pb.NetParameter()
    text_format.Merge(text, theirs)
    mine = net_shapes.param_shapes(caffe_proto.parse_net_text(text, "x"))
    assert not mine.unknown and dict(mine.params) == validate.net_shapes(theirs, "TEST")


def test_unmodelled_layer_falls_back_to_caffe_once():
    """A PReLU's blob comes from Caffe building the net (in a child): the layers around it still check."""
    text = BN_NET.replace('type: "ReLU"', 'type: "PReLU"')
    net = caffe_proto.parse_net_text(text, "x")
    assert "relu1" in net_shapes.param_shapes(net).unknown
    shapes, unchecked = validate.param_shapes(net, "x")
    assert not unchecked and shapes["relu1"] == [(8,)] and shapes["fc"] == [(5, 1024), (5,)]
    bad = caffe_proto.parse_net_text(text.replace('"PReLU"', '"PReLu"'), "x")
    with pytest.raises(Exception, match="PReLu"):
        validate.param_shapes(bad, "x")
