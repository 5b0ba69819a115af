"""`export-net` / `import-net` through the CLI on LeNet-5, the authors' 8-bit conv / 4-bit fc setting."""
import os

import numpy as np
import pytest

pytest.importorskip("caffe")

from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.codec import frontend  # noqa: E402
from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from conftest import assert_clean_error, run_cli  # noqa: E402


def quantized_lenet5(path, bits):
    deploy = nets.get("lenet-5").deploy
    shapes = solving.param_shapes(caffemodel.load_net_proto(deploy))
    rs = np.random.RandomState(0)
    params = {n: caffemodel.LayerParams("Convolution" if n.startswith("conv") else "InnerProduct",
                                        [(rs.laplace(size=s) * 0.05).astype(np.float32) for s in shp])
              for n, shp in shapes.items()}
    q = frontend.post_hoc(params, "lenet-5", bits=bits)
    caffemodel.save_params(q, path)
    return deploy, {n: q[n].blobs for n in shapes}


def test_export_import_round_trip(tmp_path):
    model = str(tmp_path / "q.caffemodel")
    deploy, blobs = quantized_lenet5(model, {"conv1": 8, "conv2": 8, "ip1": 4, "ip2": 4})
    netfile = tmp_path / "lenet5.net"
    p = run_cli("export-net", deploy, model, "-o", netfile)
    assert p.returncode == 0, p.stderr
    dense = 4 * sum(b.size for bl in blobs.values() for b in bl)
    assert 0 < os.path.getsize(str(netfile)) < dense / 8  # 8% of the weights kept: far smaller than dense
    back, dcz = tmp_path / "back.caffemodel", tmp_path / "back.dcz"
    p = run_cli("import-net", deploy, netfile, "-o", back, "--dcz", dcz)
    assert p.returncode == 0, p.stderr
    got = caffemodel.load_params(str(back))
    for n, bl in blobs.items():
        for a, b in zip(bl, got[n].blobs):
            assert np.array_equal(a, b), n
    # the .dcz written alongside decodes to the same weights, and Caffe loads them
    dec = tmp_path / "dec.caffemodel"
    assert run_cli("decode", dcz, "-o", dec, "--verify", back).returncode == 0
    import caffe

    net = caffe.Net(deploy, caffe.TEST, weights=str(dec))
    assert np.array_equal(net.params["ip1"][0].data, blobs["ip1"][0])


def test_import_export_cli_round_trip_is_byte_exact(tmp_path):
    """An authors'-style .net (codebooks not sorted) goes through import-net and export-net unchanged."""
    from test_han_format import _shuffled_net

    net = _shuffled_net(np.random.default_rng(1))
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY_TINY)
    (tmp_path / "a.net").write_bytes(net)
    p = run_cli("import-net", deploy, tmp_path / "a.net", "-o", tmp_path / "a.caffemodel", "--dcz", tmp_path / "a.dcz")
    assert p.returncode == 0, p.stderr
    p = run_cli("export-net", deploy, tmp_path / "a.caffemodel", "-o", tmp_path / "b.net")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b.net").read_bytes() == net
    assert run_cli("decode", tmp_path / "a.dcz", "-o", tmp_path / "d.caffemodel", "--verify",
                   tmp_path / "a.caffemodel").returncode == 0


DEPLOY_TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
"""


def test_export_refuses_too_many_values(tmp_path):
    model = str(tmp_path / "q5.caffemodel")
    deploy, _ = quantized_lenet5(model, {"conv1": 8, "conv2": 8, "ip1": 5, "ip2": 5})  # 31 values > 15
    assert_clean_error(run_cli("export-net", deploy, model, "-o", tmp_path / "x.net"), "4 bits")
    assert not (tmp_path / "x.net").exists()
