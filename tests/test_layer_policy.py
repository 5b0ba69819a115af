"""One per-layer-type policy, consulted by every path (no Caffe needed)."""
import collections

import numpy as np
import pytest

from caffe_dc.algorithms import quantization, schedule, sensitivity
from caffe_dc.base import layer_policy
from caffe_dc.base.blobs import CODEBOOK, blob_name
from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import MAX_BITS
from caffe_dc.base.params import LayerParams
from caffe_dc.cli import build_parser
from caffe_dc.codec import frontend

TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def _quantized_bits(params, layer):
    return int(np.log2(params[blob_name(layer, CODEBOOK)].blobs[0].size))


@pytest.mark.parametrize("ltype", TYPES)
def test_a_layer_type_gets_the_same_default_bits_on_every_path(ltype):
    want = layer_policy.default_bits(ltype)
    assert want == (5 if ltype == "InnerProduct" else 8)
    # the post-hoc encoder
    rng = np.random.default_rng(0)
    params = collections.OrderedDict(d=LayerParams(ltype, [rng.standard_normal((4, 4, 3, 3)).astype(np.float32)]))
    assert _quantized_bits(frontend.post_hoc(params, None), "d") == want
    # the chooser
    curve = sensitivity.Curve("d", layer_policy.kind(ltype), 144, np.array([0.5, 1.0]), np.array([0.9, 0.9]))
    assert sensitivity.default_bits([curve]) == {"d": want}
    # the default schedule of a net of one's own (the quantize stage's bits)
    s = schedule.from_dict(schedule.default_document(100), {"d": ltype})
    assert s.bits == {"d": want}
    # the paper's index width outside its tables follows the kind as well
    assert layer_policy.paper_index_bits(ltype) == (5 if ltype == "InnerProduct" else 8)


def test_the_papers_nets_keep_their_own_tables():
    assert layer_policy.default_bits("InnerProduct", "lenet-300-100", "ip1") == 6
    assert layer_policy.default_bits("InnerProduct", "alexnet", "fc6") == 5
    assert layer_policy.paper_index_bits("Convolution", "alexnet") == 4
    assert layer_policy.default_bits("InnerProduct", "lenet-300-100", "not-a-layer") == 5


def test_types_outside_the_policy_are_not_prunable():
    assert layer_policy.PRUNABLE_TYPES == TYPES
    for t in ("BatchNorm", "Scale", "ReLU"):
        assert not layer_policy.is_prunable(t)
        with pytest.raises(KeyError):
            layer_policy.kind(t)


@pytest.mark.parametrize("argv", [
    ["quantize", "lenet-5", "m.caffemodel", "--bits", "%d"],
    ["reproduce", "lenet-5", "--bits", "%d"],
    ["reproduce", "lenet-5", "--bits", "ip1=%d"],
    ["compress", "--solver", "s", "--weights", "w", "--bits", "%d"],
    ["encode", "net.prototxt", "m.caffemodel", "-o", "m.dcz", "--bits", "%d"],
    ["choose", "s.json", "--max-drop", "1", "--bits", "%d"],
])
def test_bits_beyond_the_container_are_refused_when_parsed(argv, capsys):
    parser, _ = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args([a % (MAX_BITS + 1) if "%d" in a else a for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1..%d" % MAX_BITS in err
    assert parser.parse_args([a % MAX_BITS if "%d" in a else a for a in argv]).bits


def test_one_max_bits():
    with pytest.raises(InputError):
        quantization.quantize_layer(np.ones(8, np.float32), MAX_BITS + 1)
    with pytest.raises(InputError):
        schedule.from_dict(dict(schedule.default_document(10), bits={"[conv]": MAX_BITS + 1}), {"c": "Convolution"})
