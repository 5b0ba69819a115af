"""Caffemodel bytes: our fast writer/reader agree with protobuf and with Caffe."""
import numpy as np
import pytest

pytest.importorskip("caffe")

from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.base.errors import InputError  # noqa: E402


def sample():
    rs = np.random.RandomState(0)
    return {"conv1": LayerParams("Convolution", [rs.randn(4, 3, 5, 5).astype(np.float32), rs.randn(4).astype(np.float32)]),
            "ip1": LayerParams("InnerProduct", [rs.randn(10, 300).astype(np.float32), np.zeros(10, np.float32)]),
            "ip1_codebook": LayerParams("Parameter", [np.array([0, -0.0, 1e-38, np.inf], np.float32)])}


def test_fast_writer_matches_protobuf_and_round_trips():
    params = sample()
    data = caffemodel.params_to_bytes(params)
    pb = caffemodel.caffe_pb2()
    net = pb.NetParameter()
    net.ParseFromString(data)
    assert [l.name for l in net.layer] == list(params)
    assert list(net.layer[1].blobs[0].shape.dim) == [10, 300]
    assert np.array_equal(np.asarray(net.layer[0].blobs[0].data, np.float32), params["conv1"].blobs[0].ravel())
    # protobuf's own serialisation of the same message parses to the same thing through both readers
    for raw in (data, net.SerializeToString()):
        back = caffemodel.parse_params(raw)
        assert list(back) == list(params)
        for k in params:
            assert back[k].type == params[k].type
            for a, b in zip(params[k].blobs, back[k].blobs):
                assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_slow_path_for_legacy_fields():
    pb = caffemodel.caffe_pb2()
    net = pb.NetParameter()
    layer = net.layer.add(name="ip", type="InnerProduct")
    b = layer.blobs.add(num=1, channels=1, height=2, width=3)  # legacy 4-d dims, double data
    b.double_data.extend([1, 2, 3, 4, 5, 6])
    out = caffemodel.parse_params(net.SerializeToString())
    assert out["ip"].blobs[0].shape == (1, 1, 2, 3) and out["ip"].blobs[0][0, 0, 1, 2] == 6


def test_caffe_loads_what_we_write(tmp_path):
    import caffe

    proto = tmp_path / "n.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 300 } } }\n'
                     'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 10 } }\n')
    params = {"ip1": sample()["ip1"]}
    path = str(tmp_path / "m.caffemodel")
    caffemodel.save_params(params, path)
    net = caffe.Net(str(proto), caffe.TEST, weights=path)
    assert np.array_equal(net.params["ip1"][0].data, params["ip1"].blobs[0])


@pytest.mark.parametrize("junk", [b"\x0a", b"\xa2\x06\xff\xff\xff\x0f", b"\x07\x07\x07"])
def test_garbage_is_a_clear_error(tmp_path, junk):
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(junk)
    with pytest.raises(InputError):
        caffemodel.load_params(str(p))
