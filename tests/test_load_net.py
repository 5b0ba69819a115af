"""caffe_dc.load_net(deploy, "x.dcz") -> caffe.Net with the decoded weights, in memory."""
import subprocess
import sys

import numpy as np
import pytest

from caffe_dc.base.errors import InputError
from caffe_dc.codec import model as codec
from conftest import REPO
from test_container import layer

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 4 } }
"""


def _dcz(tmp_path, layers, raw):
    path = tmp_path / "m.dcz"
    path.write_bytes(codec.encode_model("tiny", layers, raw))
    return str(path)


def test_import_caffe_dc_does_not_import_caffe():
    code = "import sys, caffe_dc; assert callable(caffe_dc.load_net); assert 'caffe' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_load_net(tmp_path):
    pytest.importorskip("caffe")
    import caffe_dc

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    conv = layer("conv1", (3, 1, 3, 3), 0.6, 4, 0, seed=1, ltype="Convolution")        # a dense record
    ip = layer("ip1", (4, 27), 0.3, 5, 4, seed=2)
    raw = [codec.RawBlob("conv1", "Convolution", 1, np.arange(3, dtype=np.float32)),
           codec.RawBlob("ip1", "InnerProduct", 1, np.ones(4, np.float32)),
           codec.RawBlob("extra", "Scale", 0, np.ones(2, np.float32))]                   # not in the net: ignored
    path = _dcz(tmp_path, [conv, ip], raw)
    net = caffe_dc.load_net(str(deploy), path)
    assert np.array_equal(net.params["conv1"][0].data, conv.weights())
    assert np.array_equal(net.params["conv1"][1].data, [0, 1, 2])
    assert np.array_equal(net.params["ip1"][0].data.view(np.uint32), ip.weights().view(np.uint32))
    x = np.random.RandomState(0).randn(2, 1, 5, 5).astype(np.float32)
    out = net.forward(data=x)["ip1"]
    conv_out = np.array([[[[np.sum(x[n, 0, i:i + 3, j:j + 3] * conv.weights()[c, 0]) + c for j in range(3)]
                           for i in range(3)] for c in range(3)] for n in range(2)])
    np.testing.assert_allclose(out, conv_out.reshape(2, 27) @ ip.weights().T + 1, rtol=1e-4, atol=1e-5)
    # a net layer the file lacks, or a blob of another size, is refused
    with pytest.raises(InputError, match="no weights for the net's layer 'ip1'"):
        caffe_dc.load_net(str(deploy), _dcz(tmp_path, [conv], raw[:1]))
    with pytest.raises(InputError, match="shape"):
        caffe_dc.load_net(str(deploy), _dcz(tmp_path, [conv, layer("ip1", (4, 26), 0.3, 5, 4)], raw[:2]))
    with pytest.raises(InputError, match="phase"):
        caffe_dc.load_net(str(deploy), path, phase="test")
