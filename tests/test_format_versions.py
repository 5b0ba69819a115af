"""Format 1.1 beside 1.0: dense records, compact code-length tables, the index width chosen per layer,
and old files: a file written by the 1.0 writer (tests/data/format-1.0.dcz) still decodes."""
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from caffe_dc.base.errors import FormatError, InputError
from caffe_dc.codec import container
from caffe_dc.codec import model as codec
from test_container import fix_crcs, layer, record_spans

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
Q = 8 + 8   # body offset of the fixed fields of a 2-d quantized record


def v10_model():
    """The model in tests/data/format-1.0.dcz, written by the 1.0 writer (caffe-dc e4f3c71) with block size 32."""
    rng = np.random.RandomState(2016)
    layers, raw = [], []
    for name, ltype, shape, density, wb, ib in [("conv1", "Convolution", (6, 2, 3, 3), 0.8, 8, 4),
                                                ("ip1", "InnerProduct", (20, 30), 0.1, 5, 3),
                                                ("ip2", "InnerProduct", (3, 20), 0.0, 2, 1)]:
        k = 1 << wb
        cb = np.zeros(k, np.float32)
        cb[1:] = np.sort(rng.randn(k - 1)).astype(np.float32)
        size = int(np.prod(shape))
        codes = np.where(rng.rand(size) < density, rng.randint(1, k, size=size), 0).reshape(shape)
        layers.append(codec.QuantizedLayer(name, ltype, 0, cb, codes, wb, ib))
        raw.append(codec.RawBlob(name, ltype, 1, rng.randn(shape[0]).astype(np.float32)))
    return layers, raw


def test_a_1_0_file_still_decodes():
    data = open(os.path.join(DATA, "format-1.0.dcz"), "rb").read()
    assert data[8:10] == b"\x01\x00" and len(data) == 2100
    dec, stats = codec.decode_model_report(data)
    assert dec.meta["version"] == [1, 0] and dec.meta["meta"] == {"source": "format-1.0 fixture"}
    layers, raw = v10_model()
    for a, b in zip(layers, dec.layers):
        assert (a.name, a.weight_bits, a.index_bits) == (b.name, b.weight_bits, b.index_bits)
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.codebook, b.codebook)
    for a, b in zip(raw, dec.raw):
        assert np.array_equal(a.data, b.data)
    assert stats.file_bits == 8 * len(data)
    # today's writer keeps the 1.0 layout where no 1.1 feature pays (4- and 5-bit codes: plain tables),
    # and writes the 8-bit layer's code table compact: a 1.1 file, smaller
    new = codec.encode_model("v10", layers, raw, meta={"source": "format-1.0 fixture"}, block_size=32,
                             raw_fallback=False)
    assert new[8:10] == b"\x01\x01" and len(new) < len(data)
    assert new[record_spans(new)[2][0]:] == data[record_spans(data)[2][0]:]     # ip1 and ip2: as they were
    # by default conv1 (108 weights, 256 centroids) is stored raw: a 1.2 file, smaller again
    raw12 = codec.encode_model("v10", layers, raw, meta={"source": "format-1.0 fixture"}, block_size=32)
    assert raw12[8:10] == b"\x01\x02" and len(raw12) < len(new)
    assert raw12[record_spans(raw12)[2][0]:] == data[record_spans(data)[2][0]:]


def test_a_1_0_reader_never_meets_1_1_features_silently():
    """A 1.0 file may not hold a 1.1 feature: the fields that carry them are out of range there."""
    dense = codec.encode_model("n", [layer("fc", (4, 5), 0.5, 2, 0)])
    assert dense[9] == 1
    as_1_0 = fix_crcs(dense[:9] + b"\x00" + dense[10:])
    with pytest.raises(FormatError, match="index_bits 0 outside 1..12"):
        codec.decode_model(as_1_0)
    compact = codec.encode_model("n", [layer("conv", (30, 30), 0.3, 8, 4)])
    assert compact[9] == 1
    with pytest.raises(FormatError, match="weight_bits 136"):
        codec.decode_model(fix_crcs(compact[:9] + b"\x00" + compact[10:]))
    with pytest.raises(FormatError, match="version 1.3"):
        codec.decode_model(fix_crcs(dense[:9] + b"\x03" + dense[10:]))


def test_dense_worked_example_bytes_match_the_spec():
    """docs/format.md section 8, the dense record."""
    cb = np.array([0, -0.5, 0.25, 1.0], np.float32)
    q = codec.QuantizedLayer("fc", "InnerProduct", 0, cb, np.array([[0, 2, 0, 0, 3], [0, 0, 0, 0, 1]]), 2, 0)
    r = codec.RawBlob("fc", "InnerProduct", 1, np.array([0.5, -1], np.float32))
    data = codec.encode_model("tiny", [q], [r], raw_fallback=False)   # 68 bytes; raw, the layer takes 64
    hdr = b'{"format":"caffe-dc","layers":[{"blobs":2,"name":"fc","type":"InnerProduct"}],"meta":{},"net":"tiny","records":2}'
    expect = bytes.fromhex("93434146464544430101710000 00".replace(" ", "")) + hdr + bytes.fromhex(
        "ac1812a5"
        "3c000000" "02020000" "00000000" "02000000" "05000000"
        "02000000" "0a000000" "07000000" "00100000" "0f000000" "00000000"
        "00000000" "000000bf" "0000803e" "0000803f" "3123" "720c" "3569e1b0"
        "14000000" "01010100" "00000000" "02000000" "0000003f" "000080bf" "23a16c47")
    assert data == expect and len(data) == 227
    dec = codec.decode_model(data)
    assert dec.layers[0].index_bits == 0 and np.array_equal(dec.layers[0].codes, q.codes)


@pytest.mark.parametrize("shape,density,wb", [((40, 30), 0.9, 8), ((300,), 1.0, 2), ((2000,), 0.3, 5),
                                              ((0, 3), 0.0, 3), ((50,), 0.0, 4)])
def test_dense_records_round_trip(shape, density, wb):
    q = layer("d", shape, density, wb, 0, seed=4)
    data, stats = codec.encode_model_report("n", [q], raw_fallback=False)
    dec = codec.decode_model(data)
    assert np.array_equal(dec.layers[0].codes, q.codes) and dec.layers[0].index_bits == 0
    b = stats.quantized[0]
    flat = np.asarray(q.codes).ravel()
    last = np.flatnonzero(flat)[-1] + 1 if flat.any() else 0
    assert b.entries == last and b.fillers == int(np.count_nonzero(flat[:last] == 0))
    assert b.gap_bits == 0 and b.pq_bits == b.entries * wb + 32 * (1 << wb)


def test_compact_tables_are_smaller_and_round_trip():
    q = layer("conv", (64, 32, 3, 3), 0.35, 8, 9, seed=2)      # 8-bit codes and a 9-bit gap field
    data, stats = codec.encode_model_report("n", [q])
    b = stats.quantized[0]
    assert b.table_bits < 8 * (128 + 256)                       # both tables compact
    s, _ = record_spans(data)[0]
    assert data[s + 4 + 24] & 0x80 and data[s + 4 + 25] & 0x80  # the flags
    assert np.array_equal(codec.decode_model(data).layers[0].codes, q.codes)
    lengths = np.array([3, 3, 2, 0, 0, 0, 0, 0], np.uint8)     # small alphabets stay plain
    assert container.length_table(lengths) == (b"\x33\x02\x00\x00", False)


def _code_table_at(data, record=0, ndim=2):
    """(offset of the code-length table, entries, block size) in a quantized record."""
    s, _ = record_spans(data)[record]
    fixed = s + 4 + 8 + 4 * ndim
    wb = data[fixed] & 0x7F
    n, _, bs = struct.unpack_from("<III", data, fixed + 4)
    n_off = max(0, -(-n // bs) - 1)
    streams = 1 if data[fixed + 1] & 0x7F == 0 else 2
    return fixed + 24 + 4 * (1 << wb) + 4 * streams * n_off


def test_corrupt_compact_tables():
    data = codec.encode_model("n", [layer("conv", (40, 40), 0.4, 8, 0, seed=3)])
    t = _code_table_at(data)
    bits = struct.unpack_from("<H", data, t)[0]
    bad = bytearray(data)
    bad[t + 2:t + 10] = b"\x11" * 8                             # sixteen 1-bit codes: Kraft sum 8
    with pytest.raises(FormatError, match="Kraft"):
        codec.decode_model(fix_crcs(bytes(bad)))
    bad = bytearray(data)
    struct.pack_into("<H", bad, t, bits + 8)                    # one byte more than the record holds
    with pytest.raises(FormatError, match="inconsistent lengths"):
        codec.decode_model(fix_crcs(bytes(bad)))
    bad = bytearray(data)
    struct.pack_into("<H", bad, t, bits - 1)                    # the table's own stream ends early
    with pytest.raises(FormatError):
        codec.decode_model(fix_crcs(bytes(bad)))
    bad = bytearray(data)
    bad[_code_table_at(data) - 4 * 256 - 24 + 1] |= 0x80        # a gap-table flag on a dense record
    with pytest.raises(FormatError, match="dense record"):
        codec.decode_model(fix_crcs(bytes(bad)))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.sampled_from([0.0, 0.001, 0.02, 0.1, 0.4, 0.8, 1.0]), st.integers(1, 8),
       st.integers(0, 10 ** 6), st.sampled_from([16, 4096]))
def test_auto_index_bits_is_the_smallest_record(size, density, wb, seed, block):
    q = layer("a", (size,), density, wb, None, seed=seed)
    sizes = {}
    for ib in range(container.MAX_BITS + 1):
        q.index_bits = ib
        sizes[ib] = len(codec.encode_model("n", [q], block_size=block, raw_fallback=False))
    q.index_bits = None
    data = codec.encode_model("n", [q], block_size=block, raw_fallback=False)
    dec = codec.decode_model(data)
    assert len(data) == min(sizes.values()) and sizes[dec.layers[0].index_bits] == len(data)
    assert np.array_equal(dec.layers[0].codes, q.codes)


def test_index_bits_are_checked():
    for ib in (-1, 13, 2.5, "4"):
        with pytest.raises(InputError, match="0..12"):
            codec.encode_model("n", [layer("a", (10,), 0.5, 3, ib)])


def test_cli_index_bits_auto_and_dense(tmp_path):
    pytest.importorskip("caffe")
    import json

    from caffe_dc.base.params import LayerParams
    from caffe_dc.pycaffe.caffemodel import save_params
    from conftest import assert_clean_error, run_cli

    (tmp_path / "d.prototxt").write_text(
        'name: "t"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 64 } } }\n'
        'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 32 } }\n'
        'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 8 } }\n')
    rng = np.random.RandomState(0)
    save_params({"ip1": LayerParams("InnerProduct", [rng.laplace(size=(32, 64)).astype(np.float32), np.zeros(32, np.float32)]),
                 "ip2": LayerParams("InnerProduct", [rng.laplace(size=(8, 32)).astype(np.float32), np.zeros(8, np.float32)])},
                str(tmp_path / "m.caffemodel"))
    sizes = {}
    for ib in ("5", "auto", "ip1=0,ip2=auto"):
        out, js = tmp_path / "m.dcz", tmp_path / "m.json"
        p = run_cli("encode", tmp_path / "d.prototxt", tmp_path / "m.caffemodel", "-o", out, "--json", js,
                    "--density", "ip1=0.9,ip2=0.05", "--bits", "4", "--index-bits", ib)
        assert p.returncode == 0, p.stderr
        layers = {l["name"]: l for l in json.load(open(str(js)))["layers"] if l["kind"] == "quantized"}
        sizes[ib] = out.stat().st_size
        if ib == "ip1=0,ip2=auto":
            assert layers["ip1"]["index_bits"] == 0 and layers["ip1"]["gap_bits"] == 0
        assert codec.decode_model(out.read_bytes()).layers[0].codes.shape == (32, 64)
    assert sizes["auto"] <= min(sizes["5"], sizes["ip1=0,ip2=auto"])
    assert_clean_error(run_cli("encode", tmp_path / "d.prototxt", tmp_path / "m.caffemodel", "-o", tmp_path / "x.dcz",
                               "--index-bits", "ip1=dense"), "--index-bits", "auto")
