"""The index width of ``encode`` (pure numpy, no Caffe): auto by default, the paper's on request.

Issue 15: each layer's width is chosen for the smallest record unless told
otherwise; ``--index-bits paper`` (``IndexWidth.PAPER``) gives back the
paper's widths, so its tables can be reproduced exactly.
"""
import argparse
import collections

import numpy as np
import pytest

from caffe_dc.base import layer_policy, paper
from caffe_dc.base.errors import InputError
from caffe_dc.base.params import LayerParams
from caffe_dc.cli.args import expand, layer_values
from caffe_dc.cli.codec import _index_bits
from caffe_dc.codec import frontend
from caffe_dc.codec.frontend import IndexWidth


def quantized(layers, density, bits, seed=0):
    rng = np.random.default_rng(seed)
    params = collections.OrderedDict()
    for name, ltype, shape in layers:
        params[name] = LayerParams(ltype, [rng.laplace(size=shape).astype(np.float32),
                                           rng.normal(size=shape[0]).astype(np.float32)])
    return frontend.post_hoc(params, None, density, bits)


LENET = [("ip1", "InnerProduct", (300, 784)), ("ip2", "InnerProduct", (100, 300)), ("ip3", "InnerProduct", (10, 100))]
OTHER = [("conv1", "Convolution", (32, 16, 3, 3)), ("conv2", "Convolution", (64, 32, 1, 1)),
         ("fc", "InnerProduct", (10, 256))]


@pytest.fixture(scope="module")
def lenet():
    return quantized(LENET, {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}, {"ip1": 5, "ip2": 5, "ip3": 5})


@pytest.fixture(scope="module")
def other():
    return quantized(OTHER, {"conv1": 0.5, "conv2": 0.995, "fc": 0.2}, {"conv1": 8, "conv2": 8, "fc": 4})


def widths(stats):
    return {b.name: b.index_bits for b in stats.quantized}


def size_at(q, net, ib):
    return len(frontend.encode_params(q, net, ib)[0])


def test_the_default_is_auto_the_smallest_record_per_layer(lenet):
    data, stats = frontend.encode_params(lenet, "lenet-300-100")
    assert data == frontend.encode_params(lenet, "lenet-300-100", default=IndexWidth.AUTO)[0]
    assert data == frontend.encode_params(lenet, "lenet-300-100", {n: None for n, _, _ in LENET})[0]
    chosen = widths(stats)
    for name, _, _ in LENET:   # no other width of any one layer gives a smaller file
        for ib in range(0, 13):
            assert size_at(lenet, "lenet-300-100", dict(chosen, **{name: ib})) >= len(data), (name, ib)


def test_paper_gives_back_the_papers_widths(lenet, other):
    for q, net in ((lenet, "lenet-300-100"), (other, None)):
        data, stats = frontend.encode_params(q, net, default=IndexWidth.PAPER)
        want = {n: layer_policy.paper_index_bits(q[n].type, net) for n in widths(stats)}
        assert widths(stats) == want
        assert data == frontend.encode_params(q, net, want)[0]
    assert set(widths(frontend.encode_params(lenet, "lenet-300-100", default=IndexWidth.PAPER)[1]).values()) \
        == {paper.PAPER_INDEX_BITS["lenet-300-100"]}
    assert widths(frontend.encode_params(other, None, default=IndexWidth.PAPER)[1]) == {"conv1": 8, "conv2": 8, "fc": 5}


def test_auto_is_never_larger_and_stores_a_nearly_dense_layer_dense(lenet, other):
    for q, net in ((lenet, "lenet-300-100"), (other, None)):
        assert len(frontend.encode_params(q, net)[0]) <= len(frontend.encode_params(q, net, default=IndexWidth.PAPER)[0])
    assert widths(frontend.encode_params(other, None)[1])["conv2"] == 0


def test_per_layer_values_mix_numbers_and_names(other):
    _, stats = frontend.encode_params(other, None, {"conv1": IndexWidth.PAPER, "fc": 3})
    auto = widths(frontend.encode_params(other, None)[1])
    assert widths(stats) == {"conv1": 8, "conv2": auto["conv2"], "fc": 3}
    with pytest.raises(InputError, match="not a quantized layer"):
        frontend.encode_params(other, None, {"conv9": 4})


def test_the_cli_option_parses_numbers_auto_and_paper():
    parse = layer_values(_index_bits)
    assert parse("paper") == {"*": IndexWidth.PAPER}
    assert parse("AUTO") == {"*": IndexWidth.AUTO}
    assert expand(parse("conv1=0,paper"), ["conv1", "fc"]) == {"conv1": 0, "fc": IndexWidth.PAPER}
    assert parse("fc=12") == {"fc": 12}
    for bad, msg in (("ip1=dense", "'auto' or 'paper'"), ("13", "0..12"), ("-1", "0..12"), ("5.5", "number of bits")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            parse(bad)
