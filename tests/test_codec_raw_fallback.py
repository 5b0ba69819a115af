"""No layer stored larger than raw (issue 20): a quantized layer whose record would be larger than its
float32 values is stored as those values (record kind 3, format 1.2), decodes bit for bit to the
quantized model, and is reported as what it is. No Caffe needed."""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from caffe_dc.base.blobs import CODEBOOK, CODES, MASK, blob_name
from caffe_dc.base.errors import FormatError
from caffe_dc.base.params import LayerParams
from caffe_dc.codec import container
from caffe_dc.codec import model as codec
from caffe_dc.codec.storage_table import storage_text
from caffe_dc.codec import frontend
from test_container import bias, fix_crcs, layer, record_spans

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def raw_bytes(shape):
    """A raw record per docs/format.md 3.1, framed: length, kind/ndim/blob/layer, dims, f32 values, CRC."""
    return 4 + 8 + 4 * len(shape) + 4 * int(np.prod(shape)) + 4


def tiny_conv(seed=0):
    """A 3x3 convolution of 1 input and 4 outputs with an 8-bit codebook: 36 weights, 256 centroids."""
    q = layer("conv1", (4, 1, 3, 3), 0.8, 8, None, seed=seed, ltype="Convolution")
    q.codebook[7] = -0.0                      # a signed zero centroid must come back signed
    q.codes.flat[3] = 7
    return q


def test_a_tiny_layer_is_stored_raw_and_decodes_bit_exact():
    q = tiny_conv()
    quantized_only = codec.encode_model("n", [q], [bias("conv1", 4, ltype="Convolution")], raw_fallback=False)
    qrec = record_spans(quantized_only)[0]
    assert qrec[1] - qrec[0] > 2 * raw_bytes(q.shape)        # the quantized record: over twice the raw size

    data, stats = codec.encode_model_report("n", [q], [bias("conv1", 4, ltype="Convolution")])
    s, e = record_spans(data)[0]
    assert data[8:10] == b"\x01\x02" and data[s + 4] == container.KIND_QUANTIZED_RAW
    assert e - s == raw_bytes(q.shape) and len(data) < len(quantized_only)

    dec, stats2 = codec.decode_model_report(data)
    assert dec.layers == [] and [(r.name, r.blob, r.quantized) for r in dec.raw] == [("conv1", 0, True),
                                                                                    ("conv1", 1, False)]
    w = codec.to_params(dec)["conv1"].blobs[0]
    assert w.dtype == np.float32 and w.shape == (4, 1, 3, 3)
    assert np.array_equal(w.view(np.uint32), q.weights().view(np.uint32))
    assert np.signbit(w.flat[3]) and w.flat[3] == 0
    for st_ in (stats, stats2):                               # the writer's figures and the reader's agree
        b = st_.quantized[0]
        assert (b.name, b.kind, b.stored_raw, b.weights) == ("conv1", "quantized", True, 36)
        assert b.pqh_bits == 8 * raw_bytes(q.shape) and b.pq_bits == 32 * 36
        assert b.nonzero == np.count_nonzero(q.weights()) and b.entries == b.code_bits == b.codebook_bits == 0
        assert st_.raw[0].name == "conv1" and st_.raw[0].blob == 1
        t = st_.totals()
        assert t["weights"] == 36 and t["raw_values"] == 4 and t["file_bytes"] == len(data)
        assert t["layers_pqh_bits"] == 8 * raw_bytes(q.shape)
    assert stats.to_dict() == stats2.to_dict() and json.dumps(stats2.to_dict())


def test_the_tables_mark_a_layer_stored_raw():
    big = layer("ip1", (50, 60), 0.1, 5, None, seed=2)
    _, stats = codec.encode_model_report("n", [tiny_conv(), big])
    rows = {line.split()[0]: line.split() for line in stats.table().splitlines()[2:]}
    assert rows["conv1"][5] == "raw" and rows["conv1"][8] == "raw" and rows["ip1"][5] == "5"
    rows = {line.split()[0]: line.split() for line in storage_text(stats, None).splitlines()[2:]}
    assert rows["conv1"][3] == "raw" and rows["conv1"][5] == "raw" and rows["ip1"][3] == "5"


def test_the_pipeline_path_decodes_to_the_quantized_model_minus_helpers():
    """encode_params (what `encode` and the pipeline call) on a quantized caffemodel's params, then decode."""
    q, big = tiny_conv(1), layer("ip1", (20, 36), 0.3, 5, None, seed=3)
    params = {}
    for l in (q, big):
        params[l.name] = LayerParams(l.type, [l.weights(), np.full(l.shape[0], 0.25, np.float32)])
        params[blob_name(l.name, MASK)] = LayerParams("Parameter", [(l.codes != 0).astype(np.float32)])
        params[blob_name(l.name, CODEBOOK)] = LayerParams("Parameter", [l.codebook])
        params[blob_name(l.name, CODES)] = LayerParams("Parameter", [l.codes.astype(np.float32)])
    data, stats = frontend.encode_params(params, net="t")
    assert [(b.name, b.stored_raw) for b in stats.quantized] == [("conv1", True), ("ip1", False)]
    decoded, _, meta = frontend.decode_bytes(data)
    assert meta["version"] == [1, 2] and list(decoded) == ["conv1", "ip1"]
    assert frontend.verify_equal({n: params[n] for n in ("conv1", "ip1")}, decoded, "decoded") == 36 + 4 + 720 + 20


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from([0.0, 0.05, 0.5, 1.0]), st.integers(1, 12),
                          st.sampled_from([None, 0, 4])), min_size=1, max_size=4), st.integers(0, 10 ** 6))
def test_no_record_is_larger_than_raw(specs, seed):
    layers = [layer("l%d" % i, (n,), d, wb, ib, seed=seed + i) for i, (n, d, wb, ib) in enumerate(specs)]
    data, stats = codec.encode_model_report("n", layers)
    plain, _ = codec.encode_model_report("n", layers, raw_fallback=False)
    spans, plain_spans = record_spans(data), record_spans(plain)
    for q, b, (s, e), (ps, pe) in zip(layers, stats.quantized, spans, plain_spans):
        assert e - s <= raw_bytes(q.shape)
        # stored raw exactly where the quantized record is larger; otherwise the very same record
        assert b.stored_raw == (pe - ps > raw_bytes(q.shape))
        if not b.stored_raw:
            assert data[s:e] == plain[ps:pe]
    if not any(b.stored_raw for b in stats.quantized):
        assert data == plain                                  # the fallback changes nothing it need not
    params = codec.to_params(codec.decode_model(data))
    for q in layers:
        assert np.array_equal(params[q.name].blobs[0].view(np.uint32), q.weights().view(np.uint32))


def test_a_large_layer_keeps_its_quantized_record():
    layers = [layer("ip1", (300, 100), 0.08, 5, 5, seed=4), layer("conv", (16, 8, 3, 3), 0.5, 8, None, seed=5)]
    assert codec.encode_model("n", layers) == codec.encode_model("n", layers, raw_fallback=False)


def test_older_files_still_decode_and_older_versions_refuse_kind_3():
    old = open(os.path.join(DATA, "format-1.0.dcz"), "rb").read()
    dec, stats = codec.decode_model_report(old)
    assert dec.meta["version"] == [1, 0] and not any(b.stored_raw for b in stats.quantized)
    assert len(dec.layers) == 3 and not any(r.quantized for r in dec.raw)
    data = codec.encode_model("n", [tiny_conv()])
    for minor in (b"\x00", b"\x01"):                          # kind 3 exists from 1.2 on
        with pytest.raises(FormatError, match="kind 3.*needs format 1.2"):
            codec.decode_model(fix_crcs(data[:9] + minor + data[10:]))


def test_a_raw_blob_marked_quantized_is_written_as_kind_3():
    r = codec.RawBlob("fc", "InnerProduct", 0, np.array([[0.5, 0, -0.25]], np.float32), quantized=True)
    data, stats = codec.encode_model_report("n", [], [r])
    assert data[8:10] == b"\x01\x02" and data[record_spans(data)[0][0] + 4] == 3
    assert stats.quantized[0].stored_raw and stats.quantized[0].nonzero == 2
    assert codec.decode_model(data).raw[0].quantized


def test_corrupt_kind_3_records():
    data = codec.encode_model("n", [tiny_conv()])
    s, _ = record_spans(data)[0]
    bad = bytearray(data)
    struct.pack_into("<I", bad, s + 4 + 8, 5)                 # 5 output channels: the values fall short
    with pytest.raises(FormatError, match="raw blob of shape"):
        codec.decode_model(fix_crcs(bytes(bad)))
    bad = bytearray(data)
    bad[s + 4] = 4                                            # a kind no version knows
    with pytest.raises(FormatError, match="unknown record kind 4"):
        codec.decode_model(fix_crcs(bytes(bad)))


def test_fuzzed_kind_3_files_fail_cleanly():
    """The fuzz test's mutations on a file with a kind-3 record: each decodes and is usable, or is a FormatError."""
    from test_codec_fuzz import mutate, use

    blob = codec.encode_model("n", [tiny_conv(), layer("ip1", (30, 36), 0.2, 5, None, seed=6)],
                              [bias("conv1", 4, ltype="Convolution")], block_size=32)
    assert blob[8:10] == b"\x01\x02"
    rng = np.random.RandomState(20)
    for _ in range(400):
        _, d = mutate(blob, rng)
        try:
            use(*codec.decode_model_report(d, max_weights=1 << 16))
        except FormatError as e:
            assert str(e).strip()


def test_worked_example_stored_raw_matches_the_spec():
    """docs/format.md section 8: the example's layer, stored raw by default."""
    cb = np.array([0, -0.5, 0.25, 1.0], np.float32)
    q = codec.QuantizedLayer("fc", "InnerProduct", 0, cb, np.array([[0, 2, 0, 0, 3], [0, 0, 0, 0, 1]]), 2, 2)
    r = codec.RawBlob("fc", "InnerProduct", 1, np.array([0.5, -1], np.float32))
    data = codec.encode_model("tiny", [q], [r])
    s, e = record_spans(data)[0]
    assert len(data) == 223 and data[8:10] == b"\x01\x02" and e - s == 64
    assert data[s:s + 20] == bytes.fromhex("38000000" "03020000" "00000000" "02000000" "05000000")
    assert data[s + 20:e - 4] == np.array([0, 0.25, 0, 0, 1, 0, 0, 0, 0, -0.5], "<f4").tobytes()
    assert data[e - 4:e] == bytes.fromhex("86bd214b")
