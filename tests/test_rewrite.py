"""Prototxt surgery through caffe_pb2: masks, codebooks, dropout rule, retraining solver."""
import math

import pytest

pytest.importorskip("caffe")

from google.protobuf import text_format  # noqa: E402

from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import rewrite  # noqa: E402
from caffe_dc.base.errors import InputError  # noqa: E402

NET = """
name: "fc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 } } }
layer { name: "fc6" type: "InnerProduct" bottom: "data" top: "fc6" inner_product_param { num_output: 6 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 3 } }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" }
"""


def net():
    pb = caffemodel.caffe_pb2()
    n = pb.NetParameter()
    text_format.Merge(NET, n)
    return n


def test_add_blobs_masks_and_codebooks():
    out = rewrite.add_blobs(net(), {"fc6": (6, 8), "fc7": (3, 6)}, [rewrite.MASK, rewrite.CODEBOOK, rewrite.CODES],
                            {"fc6": 32, "fc7": 16})
    layers = {l.name: l for l in out.layer}
    assert list(layers["fc6_mask"].parameter_param.shape.dim) == [6, 8]
    assert list(layers["fc6_codebook"].parameter_param.shape.dim) == [32]
    assert list(layers["fc7_codes"].parameter_param.shape.dim) == [3, 6]
    for name in ("fc6_mask", "fc6_codebook", "fc7_codes"):
        assert layers[name].type == "Parameter"
        assert layers[name].param[0].lr_mult == 0 and layers[name].param[0].decay_mult == 0
    assert set(layers[rewrite.SILENCE_NAME].bottom) == {"fc6_mask", "fc6_codebook", "fc6_codes", "fc7_mask",
                                                         "fc7_codebook", "fc7_codes"}
    # rewriting a rewritten net gives the same net (idempotent)
    again = rewrite.add_blobs(out, {"fc6": (6, 8), "fc7": (3, 6)}, [rewrite.MASK, rewrite.CODEBOOK, rewrite.CODES],
                              {"fc6": 32, "fc7": 16})
    assert text_format.MessageToString(again) == text_format.MessageToString(out)
    # and the original is untouched
    assert len(net().layer) == 6


def test_rewritten_net_instantiates_in_caffe(tmp_path):
    import caffe

    out = rewrite.add_blobs(net(), {"fc6": (6, 8)}, [rewrite.MASK])
    path = str(tmp_path / "n.prototxt")
    caffemodel.save_net_proto(out, path)
    n = caffe.Net(path, caffe.TEST)
    assert n.params["fc6_mask"][0].data.shape == (6, 8)


def test_dropout_rule():
    n = rewrite.add_blobs(net(), {"fc6": (6, 8)}, [rewrite.MASK])
    changed = rewrite.adjust_dropout(n, {"fc6": 0.09, "fc7": 0.25})
    assert changed["drop6"][1] == pytest.approx(0.15)       # the paper's AlexNet fc6 example
    assert changed["drop7"][1] == pytest.approx(0.5 * math.sqrt(0.25))  # default ratio 0.5
    assert {l.name: l for l in n.layer}["drop6"].dropout_param.dropout_ratio == pytest.approx(0.15)


def test_layer_selection_errors():
    n = net()
    assert rewrite.select_layers(n) == ["fc6", "fc7"]
    assert rewrite.select_layers(n, ["fc7"]) == ["fc7"]
    with pytest.raises(InputError, match="no layer named 'fc9'"):
        rewrite.select_layers(n, ["fc9"])
    with pytest.raises(InputError, match="cannot be pruned"):
        rewrite.select_layers(n, ["relu6"])
    with pytest.raises(InputError, match="not in the prototxt"):
        rewrite.add_blobs(n, {"fc9": (1,)})


def test_retrain_solver():
    pb = caffemodel.caffe_pb2()
    sp = pb.SolverParameter(base_lr=0.01, max_iter=10000)
    r = rewrite.retrain_solver(sp, 0.1, max_iter=500)
    assert r.base_lr == pytest.approx(0.001, rel=1e-6) and r.max_iter == 500
    assert sp.base_lr == pytest.approx(0.01, rel=1e-6)  # the input is not modified
    with pytest.raises(InputError):
        rewrite.retrain_solver(sp, 0)
