"""Issue 15's "done when" on nearly dense 1x1 layers, in pure numpy (no Caffe).

A ResNet-like set of layers -- bottleneck blocks whose 1x1 convolutions
keep >= 99% of their weights, 3x3 convolutions at 30-60%, a classifier at
20%; Laplace or normal weights, small biases -- pruned and quantized post
hoc to 8-bit conv and 4-bit fc codebooks (the widths the authors' ``.net``
format stores). The ``.dcz`` at its default (auto) index widths must come
within 3% of the zero-order entropy bound of its code and gap streams (the
figures ``caffe-dc inspect`` prints) plus codebooks and biases, and be at
least 20% smaller than the same net in the ``.net`` format.
``tools/bench_dense1x1.py`` measures the same on a few million weights.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import bench_dense1x1 as bench  # noqa: E402
from caffe_dc.codec import frontend  # noqa: E402


def bottleneck(name, cin, mid, cout, project=False):
    layers = [(name + "_conv1x1a", "Convolution", (mid, cin, 1, 1)),
              (name + "_conv3x3", "Convolution", (mid, mid, 3, 3)),
              (name + "_conv1x1b", "Convolution", (cout, mid, 1, 1))]
    return layers + ([(name + "_conv_proj", "Convolution", (cout, cin, 1, 1))] if project else [])


LAYERS = (bottleneck("res2a", 256, 64, 256) + bottleneck("res2b", 256, 64, 256)
          + bottleneck("res3a", 256, 128, 512, project=True) + bottleneck("res3b", 512, 128, 512)
          + [("fc", "InnerProduct", (1000, 512))])


@pytest.fixture(scope="module")
def figures():
    q = bench.quantized_net(LAYERS, seed=0)
    return q, bench.measure(q)


def test_the_net_is_what_the_claim_is_about(figures):
    q, m = figures
    one_by_one = [r for r in m["per_layer"] if "1x1" in r["layer"] or "proj" in r["layer"]]
    assert len(one_by_one) == 9 and m["one_by_one_layers"] == 9
    assert all(r["density"] >= 0.99 for r in one_by_one)
    assert {r["weight_bits"] for r in m["per_layer"] if r["layer"] != "fc"} == {8}
    assert [r["weight_bits"] for r in m["per_layer"] if r["layer"] == "fc"] == [4]
    assert m["bit_exact_round_trip"]


def test_dcz_is_within_3_percent_of_the_entropy_bound(figures):
    _, m = figures
    assert m["bound_bytes"] < m["dcz_bytes"] <= 1.03 * m["bound_bytes"], m


def test_dcz_is_at_least_20_percent_smaller_than_the_authors_format(figures):
    _, m = figures
    assert m["dcz_bytes"] <= 0.8 * m["net_bytes"], m


def test_auto_widths_store_the_nearly_dense_layers_dense_and_beat_the_papers(figures):
    """The gain comes from the dense records: every 1x1 layer is stored without a gap stream."""
    q, m = figures
    assert m["one_by_one_dense_records"] == 9
    assert m["dcz_bytes"] < m["dcz_paper_widths_bytes"]
    data, stats = frontend.encode_params(q, None)
    assert len(data) == m["dcz_bytes"]      # the default is auto
    t = stats.totals()
    assert np.isclose(m["bound_parts_bytes"]["streams_entropy"], t["entropy_bits"] / 8, atol=0.1)
