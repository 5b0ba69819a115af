"""AlexNet / VGG-16 storage at the paper's settings (pipeline.storage, report.storage), on shrunk nets.

The real layer lists with channel counts divided by ``shrink`` run the same
code path as the full nets (prune to the paper's W%, quantize with the
paper's bits, encode with its index bits, decode) in a second or two.
"""
from __future__ import annotations

import collections
import json
import math
import os

import numpy as np
import pytest

from caffe_dc.codec import model as codec
from caffe_dc.codec import frontend
from caffe_dc.base import paper
from caffe_dc.algorithms import pruning
from caffe_dc.pipeline import storage
from caffe_dc.report import storage as storage_report
from caffe_dc.base.params import LayerParams
from caffe_dc.base.errors import InputError

from conftest import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def alex8():
    lines = []
    r = storage.run_storage("alexnet", shrink=8, log=lines.append)
    return r, lines


@pytest.fixture(scope="module")
def vgg16():
    lines = []
    r = storage.run_storage("vgg16", shrink=16, log=lines.append)
    return r, lines


# ---------------------------------------------------------------------------- layer lists

def test_full_layer_lists_match_the_paper():
    alex = storage.net_layers("alexnet")
    vgg = storage.net_layers("vgg16")
    assert sum(l.size for l in alex) == 60_954_656            # bvlc_alexnet's weights
    assert sum(l.size for l in vgg) == 138_344_128            # VGG-16 D
    assert sum(l.size + l.shape[0] for l in alex) * 4 / 1e6 == pytest.approx(243.86, abs=0.01)  # "240 MB"
    assert sum(l.size + l.shape[0] for l in vgg) * 4 / 1e6 == pytest.approx(553.43, abs=0.01)   # "552 MB"
    for net, layers in (("alexnet", alex), ("vgg16", vgg)):
        rows = paper.layer_rows(net)
        assert [l.name for l in layers] == [r.layer for r in rows]
        for l, r in zip(layers, rows):   # rounded counts, to one unit of the last digit ("2M" for 2.36M)
            num = r.weights_label[:-1]
            unit = {"K": 1e3, "M": 1e6}[r.weights_label[-1]] * 10.0 ** -len(num.partition(".")[2])
            assert abs(l.size - r.weights) <= unit, (l.name, l.size, r.weights_label)
            assert (l.type == storage.CONV) == l.name.startswith("conv")
    assert [l.name for l in storage.net_layers("alexnet", only=["fc8", "fc6"])] == ["fc6", "fc8"]
    assert storage.net_layers("alexnet", shrink=8)[5].shape == (512, 1152)
    with pytest.raises(InputError):
        storage.net_layers("alexnet", only=["fc9"])
    with pytest.raises(InputError):
        storage.check_net("lenet-5")
    assert storage.check_net("VGG-16") == "vgg16"


def test_synthetic_layer_is_laplace_at_the_filler_scale():
    layer = storage.Layer("fc", storage.FC, (500, 800), 0.005, 0.1)
    w, b = storage.synthetic_layer(layer, seed=3, index=5)
    assert w.dtype == np.float32 and w.shape == (500, 800) and b.dtype == np.float32
    assert np.all(b == np.float32(0.1))
    assert float(w.std()) == pytest.approx(0.005, rel=0.02)
    assert abs(float(w.mean())) < 5e-5
    # Laplace: mean |w| = b = std / sqrt(2), excess kurtosis 3 (a Gaussian has sqrt(2/pi) * std and 0).
    assert float(np.abs(w).mean()) == pytest.approx(0.005 / math.sqrt(2), rel=0.02)
    k = float(((w.astype(np.float64) / w.std()) ** 4).mean()) - 3
    assert 2.5 < k < 3.5
    w2, _ = storage.synthetic_layer(layer, seed=3, index=5)
    assert np.array_equal(w, w2)                                  # reproducible
    w3, _ = storage.synthetic_layer(layer, seed=3, index=6)
    assert not np.array_equal(w, w3)                              # each layer its own stream


# ---------------------------------------------------------------------------- the pipeline

@pytest.mark.parametrize("which", ["alex8", "vgg16"])
def test_densities_bits_and_bit_exact_decode(which, request):
    r, _ = request.getfixturevalue(which)
    net = r.summary["net"]
    layers = storage.net_layers(net, r.summary["shrink"])
    assert [l["name"] for l in r.summary["layers"]] == [l.name for l in layers]
    params, stats, meta = frontend.decode_bytes(r.blob)        # decode again, independently
    assert meta["meta"]["weights"] == storage.SYNTHETIC and meta["meta"]["paper_net"] == net
    for l, lr in zip(layers, r.summary["layers"]):
        w = params[l.name].blobs[0]
        assert w.shape == l.shape and w.dtype == np.float32
        kept = int(np.count_nonzero(w))
        assert kept == lr["kept"] == pruning.keep_count(paper.PAPER_DENSITY[net][l.name], l.size)
        bits = paper.PAPER_BITS[net][l.name]
        distinct = np.unique(w[w != 0])
        assert distinct.size == lr["distinct"] <= 2 ** bits - 1
        assert np.array_equal(params[l.name].blobs[1], np.full(l.shape[0], l.bias, np.float32))
        # bit-exact: the verified copy in the result is the same model
        assert np.array_equal(w.view(np.uint32), r.decoded[l.name].blobs[0].view(np.uint32))
    coded = [b for b in stats.quantized if not b.stored_raw]     # shrunk first convs are smaller stored raw
    assert {b.index_bits for b in coded} == {paper.PAPER_INDEX_BITS[net]}
    assert all(b.weight_bits == paper.PAPER_BITS[net][b.name] for b in coded)
    assert r.summary["verified_values"] == sum(l.size + l.shape[0] for l in layers)


def test_kept_weights_are_the_largest_synthetic_ones(alex8):
    r, _ = alex8
    layer = storage.net_layers("alexnet", 8)[6]                 # fc7
    w, _ = storage.synthetic_layer(layer, seed=0, index=6)
    mask = pruning.density_mask(w, paper.PAPER_DENSITY["alexnet"]["fc7"])
    q = r.decoded["fc7"].blobs[0]
    assert np.array_equal(q != 0, mask)
    # each kept weight is coded to its nearest centroid
    cb = np.unique(q[q != 0]).astype(np.float64)
    wk, qk = w[mask].astype(np.float64)[:2000], q[mask].astype(np.float64)[:2000]
    nearest = np.abs(wk[:, None] - cb[None, :]).min(axis=1)
    assert np.all(np.abs(qk - wk) <= nearest + 1e-7)


def test_every_line_says_synthetic(alex8):
    r, lines = alex8
    assert lines and all("synthetic weights" in l for l in lines)
    for stage in ("prune", "quantize", "encode", "decode", "verify"):
        assert any(("] %s" % stage) in l and l.rstrip().endswith(" s") for l in lines), stage
    text = storage_report.text_report(r)
    assert all("synthetic weights" in l for l in text.splitlines())
    assert "Table 4" in text and "35x" in text and "240 MB" in text and "6.9 MB" in text
    md = storage_report.markdown_report(r, "caffe-dc storage alexnet")
    assert md.startswith("# AlexNet storage at the paper's settings (synthetic weights)")
    assert "synthetic weights**" in md and md.count("(synthetic weights)") >= 4


def test_summary_and_written_files(alex8, tmp_path):
    r, _ = alex8
    paths = storage_report.write_outputs(r, str(tmp_path / "out"), str(tmp_path / "copy" / "s.json"), "cmd")
    doc = json.loads(open(paths["json"]).read())
    assert doc == json.loads(open(str(tmp_path / "copy" / "s.json")).read())
    assert doc["weights"] == "synthetic weights" and doc["synthetic"] is True and doc["command"] == "cmd"
    assert set(doc["seconds"]) == {"prune", "quantize", "encode", "decode", "verify", "total"}
    assert all(v >= 0 for v in doc["seconds"].values())
    assert doc["peak_rss_mb"] > 10 and set(doc["rss_mb_by_stage"]) == {"after_quantize", "after_encode", "after_decode"}
    t, p = doc["totals"], doc["paper"]
    assert t["file_bytes"] == len(r.blob) == os.path.getsize(paths["blob"])
    assert t["ratio"] == pytest.approx(t["dense_mb"] / t["compressed_mb"])
    assert (p["dense_mb"], p["compressed_mb"], p["ratio"], p["table"]) == (240.0, 6.9, 35, 4)
    assert len(doc["layers"]) == 8 and {"name", "shape", "kept", "density", "density_target", "bits", "distinct",
                                         "prune_s", "quantize_s", "fit"} <= set(doc["layers"][0])
    assert doc["stats"]["totals"]["file_bytes"] == len(r.blob)
    assert [b["layer"] for b in doc["breakdown"]] == [l["name"] for l in doc["layers"]]
    assert all("paper" not in b for b in doc["breakdown"])   # shrunk: the paper's sizes do not apply
    md = open(paths["markdown"]).read()
    assert "synthetic weights" in md and "| fc6 |" in md
    params, _, _ = frontend.decode_bytes(open(paths["blob"], "rb").read())
    assert list(params) == [l["name"] for l in doc["layers"]]


def test_breakdown_infers_the_papers_streams():
    """AlexNet fc6 at full size: the paper's columns imply ~4.03M entries (18% fillers per kept weight)."""
    n = 37_748_736
    b = codec.BlobStats("fc6", 0, "quantized", n, nonzero=3_397_386, entries=4_300_000, fillers=902_614,
                        weight_bits=5, index_bits=4, codebook_bits=1024, pq_bits=0, code_bits=16_000_000,
                        gap_bits=15_000_000, pqh_bits=31_500_000)
    stats = codec.ModelStats("alexnet", [b], header_bits=0, file_bits=31_500_000)
    (row,) = storage_report.breakdown(stats, "alexnet")
    p = row["paper"]
    assert p["entries"] == pytest.approx((0.030 * 32 * n - 1024) / 9)
    assert 0.15 < p["fillers_per_kept"] < 0.22
    assert p["code_bytes"] == pytest.approx(p["entries"] * 3.9 / 8)
    assert p["gap_bytes"] == pytest.approx(p["entries"] * 3.2 / 8)
    assert p["total_bytes"] == pytest.approx(0.0239 * 32 * n / 8)
    assert 0 < p["other_bytes"] < 0.02 * p["total_bytes"]
    assert row["code_bytes"] == 2_000_000 and row["other_bytes"] == 62_500


# ---------------------------------------------------------------------------- k-means on a sample

def test_quantize_sampled_contract():
    layer = storage.Layer("fc", storage.FC, (300, 400), 0.01, 0.0)
    w, _ = storage.synthetic_layer(layer, 1)
    pruning.prune_in_place(w, 0.2)
    cb, codes = storage.quantize_sampled(w, 5, 2000, seed=0)
    assert cb.dtype == np.float32 and cb.size == 32 and cb[0] == 0.0 and np.all(cb[1:] != 0)
    assert np.array_equal(codes == 0, w == 0) and codes.dtype == np.uint8
    q = cb[codes]
    c = np.unique(cb[1:])
    assert np.all(np.diff(cb[1:]) >= 0)
    assert float(np.abs(q - w).max()) < float(np.diff(c).max())
    # every centroid is the mean of the weights coded to it (the final M-step on all weights)
    for k in np.unique(codes[codes > 0])[:5]:
        assert float(cb[k]) == pytest.approx(float(w[codes == k].astype(np.float64).mean()), rel=1e-5)
    # a sample at least as large as the layer is the plain quantize_layer
    from caffe_dc.algorithms import quantization
    cb2, codes2 = storage.quantize_sampled(w, 5, w.size, seed=0)
    cb3, codes3 = quantization.quantize_layer(w, 5)
    assert np.array_equal(cb2, cb3) and np.array_equal(codes2, codes3)


def test_fit_sample_run_labels_and_limits():
    lines = []
    r = storage.run_storage("alexnet", shrink=8, fit_sample=4096, only=["fc7", "fc8"], log=lines.append)
    assert [l["fit"] for l in r.summary["layers"]] == ["a sample of 4096"] * 2
    assert "sample of 4096" in r.summary["kmeans_fit"]
    with pytest.raises(InputError):
        storage.run_storage("alexnet", shrink=8, fit_sample=10, only=["fc8"], log=lines.append)


# ---------------------------------------------------------------------------- --weights

def _shrunk_caffemodel(path, net, shrink, drop=None, reshape=None):
    from caffe_dc.pycaffe.caffemodel import save_params

    params = collections.OrderedDict()
    rng = np.random.default_rng(7)
    for l in storage.net_layers(net, shrink):
        if l.name == drop:
            continue
        shape = reshape if l.name == "fc7" and reshape else l.shape
        w = rng.standard_normal(shape).astype(np.float32) * np.float32(0.01)
        params[l.name] = LayerParams(l.type, [w, rng.standard_normal(l.shape[0]).astype(np.float32)])
    save_params(params, str(path))
    return params


def test_weights_from_a_caffemodel(tmp_path):
    pytest.importorskip("caffe")
    src = _shrunk_caffemodel(tmp_path / "a.caffemodel", "alexnet", 8)
    lines = []
    r = storage.run_storage("alexnet", weights=str(tmp_path / "a.caffemodel"), shrink=8, log=lines.append)
    assert r.summary["weights"] == "weights from a.caffemodel" and r.summary["synthetic"] is False
    assert all("weights from a.caffemodel" in l and "synthetic" not in l for l in lines)
    for name, lp in src.items():
        q = r.decoded[name].blobs[0]
        mask = pruning.density_mask(lp.blobs[0], paper.PAPER_DENSITY["alexnet"][name])
        assert np.array_equal(q != 0, mask), name
        assert np.array_equal(r.decoded[name].blobs[1], lp.blobs[1])   # biases kept exactly
    assert "synthetic" not in storage_report.markdown_report(r).split("\n")[0]


@pytest.mark.parametrize("kind", ["missing_layer", "wrong_shape", "other_net"])
def test_mismatched_caffemodel_is_an_input_error(tmp_path, kind):
    pytest.importorskip("caffe")
    path = tmp_path / "bad.caffemodel"
    if kind == "missing_layer":
        _shrunk_caffemodel(path, "alexnet", 8, drop="conv3")
        net, frag = "alexnet", "no layer 'conv3'"
    elif kind == "wrong_shape":
        _shrunk_caffemodel(path, "alexnet", 8, reshape=(512, 500))
        net, frag = "alexnet", "'fc7' has weights of shape (512, 500)"
    else:
        _shrunk_caffemodel(path, "alexnet", 8)
        net, frag = "vgg16", "is not a vgg16 caffemodel"
    with pytest.raises(InputError) as e:
        storage.run_storage(net, weights=str(path), shrink=8, log=lambda s: None)
    assert frag in str(e.value)


# ---------------------------------------------------------------------------- CLI

def test_cli_storage(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("storage", "alexnet", "--shrink", "16", "--out", out, "--json", tmp_path / "s.json", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) > 30 and all("synthetic weights" in l for l in lines)
    assert {"storage.json", "storage.md", "alexnet.dcz"} <= set(os.listdir(out))
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["seed"] == 2 and doc["shrink"] == 16 and doc["command"].startswith("caffe-dc storage alexnet")


def test_cli_storage_errors(tmp_path):
    assert_clean_error(run_cli("storage", "lenet-5"), "alexnet or vgg16")
    assert_clean_error(run_cli("storage", "alexnet", "--weights", tmp_path / "none.caffemodel"), "no such caffemodel")
    bad = tmp_path / "junk.caffemodel"
    bad.write_bytes(b"\x08\x96\x01 this is not a protobuf \xff\xff")
    assert_clean_error(run_cli("storage", "vgg16", "--weights", bad, "--out", tmp_path / "o"))
