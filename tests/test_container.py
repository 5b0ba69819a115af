"""The .dcz container and the model-level codec: bit-exact round trips, sizes, validation."""
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from caffe_dc.codec import model as codec
from caffe_dc.base.params import LayerParams
from caffe_dc.base.errors import FormatError, InputError


# ----------------------------------------------------------------------------- helpers

def layer(name, shape, density, wb, ib, seed=0, distinct=None, ltype="InnerProduct"):
    rng = np.random.RandomState(seed)
    k = 1 << wb
    cb = np.zeros(k, dtype=np.float32)
    cb[1:] = rng.randn(k - 1).astype(np.float32)
    size = int(np.prod(shape))
    hi = k if distinct is None else min(k, 1 + distinct)
    codes = np.where(rng.rand(size) < density, rng.randint(1, hi, size=size) if hi > 1 else 0, 0)
    return codec.QuantizedLayer(name, ltype, 0, cb, codes.reshape(shape), wb, ib)


def bias(name, n, seed=0, ltype="InnerProduct"):
    return codec.RawBlob(name, ltype, 1, np.random.RandomState(seed).randn(n).astype(np.float32))


def record_spans(data):
    """(start, end) of every record (length field .. CRC inclusive), following docs/format.md."""
    h = struct.unpack_from("<I", data, 10)[0]
    pos, spans = 18 + h, []
    while pos + 4 <= len(data):
        n = struct.unpack_from("<I", data, pos)[0]
        spans.append((pos, pos + 8 + n))
        pos += 8 + n
    return spans


def fix_crcs(data):
    """Recompute the header CRC and every record CRC (to reach the deeper checks)."""
    d = bytearray(data)
    h = struct.unpack_from("<I", d, 10)[0]
    if 18 + h <= len(d):
        struct.pack_into("<I", d, 14 + h, zlib.crc32(bytes(d[:14 + h])) & 0xFFFFFFFF)
    for s, e in record_spans(bytes(d)):
        if e <= len(d):
            struct.pack_into("<I", d, e - 4, zlib.crc32(bytes(d[s:e - 4])) & 0xFFFFFFFF)
    return bytes(d)


def with_header(data, edit):
    """Replace the JSON header by edit(header dict) and fix all CRCs."""
    h = struct.unpack_from("<I", data, 10)[0]
    hdr = json.loads(data[14:14 + h])
    new = edit(hdr)
    new = new if isinstance(new, bytes) else json.dumps(hdr).encode()
    out = data[:10] + struct.pack("<I", len(new)) + new + b"\0\0\0\0" + data[18 + h:]
    return fix_crcs(out)


def small_model():
    layers = [layer("conv1", (4, 3, 3, 3), 0.7, 8, 4, seed=1, ltype="Convolution"),
              layer("ip1", (50, 60), 0.1, 5, 4, seed=2)]
    raw = [bias("conv1", 4, ltype="Convolution"), bias("ip1", 50)]
    return layers, raw


def assert_same(orig_layers, orig_raw, dec):
    """Bit-exact: quantized layers come back as they were, or (stored raw: smaller) as their weights."""
    stored_raw = {(b.name, b.blob): b for b in dec.raw if b.quantized}
    coded = iter(dec.layers)
    assert len(dec.layers) + len(stored_raw) == len(orig_layers) and len(dec.raw) == len(orig_raw) + len(stored_raw)
    for a in orig_layers:
        if (a.name, a.blob) in stored_raw:
            b = stored_raw[(a.name, a.blob)]
            assert b.type == a.type and b.data.shape == np.shape(a.codes)
            assert np.array_equal(a.weights().view(np.uint32), b.data.view(np.uint32))
            continue
        b = next(coded)
        assert (a.name, a.type, a.blob, a.weight_bits, a.index_bits) == (b.name, b.type, b.blob, b.weight_bits, b.index_bits)
        assert b.codes.shape == np.shape(a.codes) and np.array_equal(b.codes, a.codes)
        assert np.array_equal(np.asarray(a.codebook, np.float32).view(np.uint32), b.codebook.view(np.uint32))
        assert np.array_equal(a.weights().view(np.uint32), b.weights().view(np.uint32))  # bit-exact
    for a, b in zip(orig_raw, [b for b in dec.raw if not b.quantized]):
        assert (a.name, a.blob) == (b.name, b.blob)
        assert np.array_equal(np.asarray(a.data, np.float32).view(np.uint32), b.data.view(np.uint32))


# ----------------------------------------------------------------------------- round trips

@st.composite
def random_layers(draw):
    n = draw(st.integers(1, 4))
    layers, raw = [], []
    for i in range(n):
        ndim = draw(st.integers(0, 3))
        shape = tuple(draw(st.lists(st.integers(0, 30), min_size=ndim, max_size=ndim)))
        density = draw(st.sampled_from([0.0, 0.002, 0.05, 0.3, 0.9, 1.0]))
        wb, ib = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        distinct = draw(st.sampled_from([None, 1, 2]))
        q = layer("l%d" % i, shape, density, wb, ib, seed=draw(st.integers(0, 10 ** 6)), distinct=distinct)
        layers.append(q)
        if draw(st.booleans()):
            raw.append(bias("l%d" % i, draw(st.integers(0, 20)), seed=i))
    return layers, raw


@settings(max_examples=60, deadline=None)
@given(random_layers(), st.sampled_from([1, 3, 64, 4096]))
def test_random_models_round_trip_bit_exact(model, block):
    layers, raw = model
    data, stats = codec.encode_model_report("net", layers, raw, meta={"k": [1, 2]}, block_size=block)
    dec, stats2 = codec.decode_model_report(data)
    assert_same(layers, raw, dec)
    assert dec.meta["net"] == "net" and dec.meta["meta"] == {"k": [1, 2]}
    # the oldest version that holds the records: 1.1 only for a dense record or a compact length table,
    # 1.2 for a layer stored raw; and no quantized layer's record is larger than its values raw
    plain = lambda b: 4 * (1 << b.weight_bits) + (4 * (1 << b.index_bits) if b.index_bits else 0)
    coded = [b for b in stats.quantized if not b.stored_raw]
    v11 = any(b.index_bits == 0 or b.table_bits != plain(b) for b in coded)
    assert dec.meta["version"] == [1, 2 if len(coded) < len(layers) else int(v11)]
    raw_bytes = lambda q: 4 + 8 + 4 * np.ndim(q.codes) + 4 * np.size(q.codes) + 4   # length, prefix, dims, values, CRC
    assert all(b.pqh_bits <= 8 * raw_bytes(q) for b, q in zip(stats.quantized, layers))
    assert stats2.file_bits == 8 * len(data) == stats.file_bits
    assert stats.totals() == stats2.totals()


@pytest.mark.parametrize("shape,density,wb,ib,distinct", [
    ((0,), 0.0, 3, 3, None),          # empty layer
    ((1,), 1.0, 1, 1, None),          # one weight
    ((30, 40), 1.0, 8, 8, None),      # all weights kept
    ((200000,), 0.00002, 5, 1, None),  # gaps far longer than a 1-bit field
    ((64, 64), 0.5, 6, 4, 1),         # a single distinct code (k = 1)
    ((500,), 0.0, 4, 4, None),        # everything pruned
    ((3, 5, 7), 0.4, 12, 12, None),   # widest fields
])
def test_edge_layers(shape, density, wb, ib, distinct):
    q = layer("x", shape, density, wb, ib, seed=5, distinct=distinct)
    for fallback in (False, True):     # the tiny ones are stored raw unless told otherwise
        assert_same([q], [], codec.decode_model(codec.encode_model("n", [q], raw_fallback=fallback)))


def test_params_round_trip_and_order():
    layers, raw = small_model()
    params = codec.to_params(codec.Decoded(layers, raw, {"layers": [
        {"name": "conv1", "type": "Convolution", "blobs": 2}, {"name": "ip1", "type": "InnerProduct", "blobs": 2}]}))
    quant = {q.name: codec.QuantSpec(q.codebook, q.codes, q.index_bits, q.weight_bits) for q in layers}
    qs, rs = codec.from_params(params, quant)
    data = codec.encode_model("small", qs, rs)
    back = codec.to_params(codec.decode_model(data))
    assert list(back) == ["conv1", "ip1"]
    for name in params:
        assert back[name].type == params[name].type
        for a, b in zip(params[name].blobs, back[name].blobs):
            assert a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_from_params_checks_the_model_is_exactly_quantized():
    q = layer("ip", (10, 10), 0.5, 3, 4, distinct=5)  # codes 1..5
    params = {"ip": LayerParams("InnerProduct", [q.weights(), np.zeros(10, np.float32)])}
    ok = codec.QuantSpec(q.codebook[:6], q.codes.astype(np.float32), 4)  # short codebook, float codes
    qs, rs = codec.from_params(params, {"ip": ok})
    assert qs[0].weight_bits == 3 and qs[0].codebook.size == 8 and len(rs) == 1
    w = q.weights().copy()
    w[0, 0] += 1e-3
    params["ip"] = LayerParams("InnerProduct", [w, np.zeros(10, np.float32)])
    with pytest.raises(InputError, match="differ from codebook"):
        codec.from_params(params, {"ip": ok})
    with pytest.raises(InputError, match="not in the model"):
        codec.from_params(params, {"nope": ok})
    with pytest.raises(InputError, match="codes of shape"):
        codec.from_params(params, {"ip": ok._replace(codes=np.zeros(7))})


def test_specs_from_quantized_params():
    q = layer("fc", (6, 4), 0.5, 2, 3)
    params = {
        "fc": LayerParams("InnerProduct", [q.weights(), np.ones(6, np.float32)]),
        "fc_mask": LayerParams("Parameter", [(q.codes != 0).astype(np.float32)]),
        "fc_codebook": LayerParams("Parameter", [q.codebook]),
        "fc_codes": LayerParams("Parameter", [q.codes.astype(np.float32)]),
    }
    specs, names = codec.specs_from_quantized_params(params, 3)
    assert names == ["fc"] and specs["fc"].weight_bits == 2 and specs["fc"].index_bits == 3
    qs, rs = codec.from_params(params, specs, names)
    dec = codec.decode_model(codec.encode_model("n", qs, rs))
    assert np.array_equal(dec.layers[0].codes, q.codes) and np.array_equal(dec.raw[0].data, np.ones(6))
    with pytest.raises(InputError):
        codec.specs_from_quantized_params({"fc": params["fc"]}, 3)


# ----------------------------------------------------------------------------- sizes

def test_worked_example_bytes_match_the_spec():
    """The exact bytes of docs/format.md section 8: the format is pinned."""
    cb = np.array([0, -0.5, 0.25, 1.0], np.float32)
    q = codec.QuantizedLayer("fc", "InnerProduct", 0, cb, np.array([[0, 2, 0, 0, 3], [0, 0, 0, 0, 1]]), 2, 2)
    r = codec.RawBlob("fc", "InnerProduct", 1, np.array([0.5, -1], np.float32))
    data = codec.encode_model("tiny", [q], [r], raw_fallback=False)   # 70 bytes; raw, the layer takes 64
    hdr = b'{"format":"caffe-dc","layers":[{"blobs":2,"name":"fc","type":"InnerProduct"}],"meta":{},"net":"tiny","records":2}'
    expect = (bytes.fromhex("93434146464544430100710000 00".replace(" ", "")) + hdr + bytes.fromhex(
        "bda46497"
        "3e000000" "02020000" "00000000" "02000000" "05000000"
        "02020000" "04000000" "01000000" "00100000" "08000000" "08000000"
        "00000000" "000000bf" "0000803e" "0000803f" "2222" "2222" "b1" "6c" "ef9c1922"
        "14000000" "01010100" "00000000" "02000000" "0000003f" "000080bf" "23a16c47"))
    assert data == expect and len(data) == 229


def test_stats_follow_the_paper_accounting():
    q = layer("ip1", (100, 200), 0.08, 5, 4, seed=3)
    data, s = codec.encode_model_report("n", [q], [bias("ip1", 100)])
    b = s.quantized[0]
    codes = q.codes.ravel()
    nz = np.flatnonzero(codes)
    fillers = int(((np.diff(nz, prepend=-1) - 1) >> 4).sum())
    assert b.weights == 20000 and b.nonzero == nz.size and b.fillers == fillers
    assert b.entries == nz.size + fillers
    assert b.pq_bits == b.entries * (5 + 4) + 32 * 32
    assert b.rate_pq == pytest.approx(b.pq_bits / (32 * 20000))
    recs = record_spans(data)
    assert b.pqh_bits == 8 * (recs[0][1] - recs[0][0])
    assert b.pqh_bits >= b.code_bits + b.gap_bits + b.table_bits + b.offset_bits + b.codebook_bits
    assert b.code_entropy <= b.weight_bits_h < b.code_entropy + 1
    assert b.gap_entropy <= b.index_bits_h < b.gap_entropy + 1
    t = s.totals()
    assert t["pqh_bits"] == 8 * len(data) and t["original_bits"] == 32 * (20000 + 100)
    assert t["pq_bits"] == b.pq_bits + 32 * 100 + s.header_bits
    assert t["rate_pqh"] == pytest.approx(8 * len(data) / (32 * 20100))
    assert "ip1" in s.table() and "total" in s.table()
    json.dumps(s.to_dict())  # plain JSON for reports


# ----------------------------------------------------------------------------- encoder input errors

@pytest.mark.parametrize("bad,match", [
    (dict(codes=np.array([0, 1, 8])), "codes span"),
    (dict(codes=np.array([0, -1])), "codes span"),
    (dict(codes=np.array([0.5, 1])), "whole numbers"),
    (dict(codebook=np.ones(8, np.float32)), "reserved"),
    (dict(codebook=np.zeros(4, np.float32)), "need 8 entries"),
    (dict(weight_bits=0), "1..12"),
    (dict(index_bits=13), "1..12"),
])
def test_encoder_rejects_bad_layers(bad, match):
    q = codec.QuantizedLayer("l", "InnerProduct", 0, np.arange(8, dtype=np.float32), np.array([0, 1, 2]), 3, 2)
    for k, v in bad.items():
        setattr(q, k, v)
    with pytest.raises(InputError, match=match):
        codec.encode_model("n", [q])


def test_encoder_rejects_inconsistent_blob_sets():
    q = layer("a", (3,), 1.0, 2, 2)
    with pytest.raises(InputError, match="every blob"):
        codec.encode_model("n", [], [bias("a", 3)])          # blob 1 without blob 0
    with pytest.raises(InputError, match="twice"):
        codec.encode_model("n", [q, q])
    with pytest.raises(InputError, match="both"):
        codec.encode_model("n", [q], [codec.RawBlob("a", "Convolution", 1, np.zeros(1))])
    with pytest.raises(InputError, match="JSON"):
        codec.encode_model("n", [q], meta={"x": object()})


# ----------------------------------------------------------------------------- decoder validation

@pytest.fixture(scope="module")
def blob():
    """conv1 as a quantized record, though raw would be smaller (108 weights, 256 centroids): its fields are tested."""
    layers, raw = small_model()
    return codec.encode_model("small", layers, raw, block_size=16, raw_fallback=False)


def test_clean_blob_decodes(blob):
    layers, raw = small_model()
    assert_same(layers, raw, codec.decode_model(blob))


def test_every_truncation_is_a_format_error(blob):
    for n in range(len(blob)):
        with pytest.raises(FormatError) as e:
            codec.decode_model(blob[:n])
        assert str(e.value)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: b"\x93NUMPY\x01\x00" + d[8:], "bad magic"),
    (lambda d: b"", "bad magic"),
    (lambda d: b"PK\x03\x04", "bad magic"),
    (lambda d: d[:8] + b"\x02\x00" + d[10:], "version 2.0"),
    (lambda d: d + b"\0", "trailing"),
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "header CRC"),
    (lambda d: d[:-10] + bytes([d[-10] ^ 0x40]) + d[-9:], "CRC mismatch"),
    (lambda d: d[:10] + struct.pack("<I", 0xFFFFFFFF) + d[14:], "header length"),
])
def test_corruptions(blob, mutate, match):
    with pytest.raises(FormatError, match=match):
        codec.decode_model(mutate(blob))


def _edit_json(**kw):
    def edit(h):
        for k, v in kw.items():
            if v is KeyError:
                del h[k]
            else:
                h[k] = v
    return edit


@pytest.mark.parametrize("edit,match", [
    (lambda h: b"{not json", "not valid JSON"),
    (lambda h: b"[" * 100000 + b"]" * 100000, "JSON"),          # nesting bomb
    (lambda h: b"\xff\xfe", "not valid JSON"),
    (lambda h: b"[1, 2]", "not a JSON object"),
    (_edit_json(format="npy"), "format"),
    (_edit_json(records=5), "records"),
    (_edit_json(layers="x"), "layers"),
    (_edit_json(net=3), "net"),
    (lambda h: h["layers"].append(dict(h["layers"][0])), "twice"),
    (lambda h: h["layers"][0].update(blobs=0), "malformed"),
    (lambda h: h["layers"][1].update(blobs=3) or h.update(records=5), "missing|truncated"),
])
def test_bad_headers_with_valid_crc(blob, edit, match):
    with pytest.raises(FormatError, match=match):
        codec.decode_model(with_header(blob, edit))


def patch_record(data, index, offset, fmt, value):
    """Overwrite a field at ``offset`` inside the body of record ``index``, then fix CRCs."""
    s, _ = record_spans(data)[index]
    d = bytearray(data)
    struct.pack_into(fmt, d, s + 4 + offset, value)
    return fix_crcs(bytes(d))


# body offsets of the quantized record of conv1 (4-d): prefix 8 + dims 16, then the fixed fields
Q = 8 + 16


@pytest.mark.parametrize("index,offset,fmt,value,match", [
    (0, 0, "<B", 9, "unknown record kind"),
    (0, 1, "<B", 40, "axes"),
    (0, 2, "<H", 5, "blobs"),
    (0, 4, "<I", 7, "layer index"),
    (1, 2, "<H", 0, "out of order"),
    (0, 8, "<I", 0xFFFFFFFF, "refusing to allocate"),          # absurd dims, no allocation
    (0, Q + 0, "<B", 13, "outside 1..12"),
    (0, Q + 2, "<H", 1, "reserved"),
    (0, Q + 4, "<I", 10 ** 6, "entries for a blob"),
    (0, Q + 8, "<I", 10 ** 6, "fillers"),
    (0, Q + 12, "<I", 0, "block size"),
    (0, Q + 16, "<I", 10 ** 6, "inconsistent lengths"),
    (0, Q + 24, "<f", 1.5, "codebook\\[0\\]"),
    (1, 8, "<I", 3, "raw blob"),
    (0, 12, "<I", 1, "past the layer|entries for a blob"),       # a smaller shape: entries overrun it
])
def test_bad_record_fields_with_valid_crc(blob, index, offset, fmt, value, match):
    with pytest.raises(FormatError, match=match):
        codec.decode_model(patch_record(blob, index, offset, fmt, value))


def test_invalid_code_length_table_is_rejected(blob):
    # conv1: 8-bit codes, 4-bit gaps, 108 weights -> locate the gap-length table from the fields
    s, e = record_spans(blob)[0]
    n, fill, bs, cbits, gbits = struct.unpack_from("<IIIII", blob, s + 4 + Q + 4)
    n_off = max(0, -(-n // bs) - 1)
    cl = s + 4 + Q + 24 + 4 * 256 + 8 * n_off
    if blob[s + 4 + Q] & 0x80:            # format 1.1: the code table is Huffman-coded (u16 bits, 8 bytes, payload)
        gl = cl + 10 + (struct.unpack_from("<H", blob, cl)[0] + 7) // 8
    else:
        gl = cl + 128
    assert not blob[s + 4 + Q + 1] & 0x80  # the 16-symbol gap table stays plain: 8 bytes
    d = bytearray(blob)
    d[gl:gl + 8] = b"\x11" * 8            # sixteen 1-bit codes: Kraft sum 8
    with pytest.raises(FormatError, match="Kraft"):
        codec.decode_model(fix_crcs(bytes(d)))
    d[gl:gl + 8] = b"\xff" * 8            # 15-bit codes
    with pytest.raises(FormatError):
        codec.decode_model(fix_crcs(bytes(d)))


def test_max_weights_limit(blob):
    with pytest.raises(FormatError, match="max_weights"):
        codec.decode_model(blob, max_weights=100)
    assert len(codec.decode_model(blob, max_weights=10 ** 5).layers) == 2


def test_accepts_memoryview_and_bytearray(blob):
    for d in (bytearray(blob), memoryview(blob)):
        assert len(codec.decode_model(d).layers) == 2


def test_decoded_caffemodel_loads_in_caffe(tmp_path):
    """The CLI path: .dcz -> to_params -> save_params -> caffe.Net gives the quantized weights bit for bit."""
    caffe = pytest.importorskip("caffe")
    from caffe_dc.pycaffe.caffemodel import load_params, save_params

    q = layer("fc", (3, 10), 0.4, 4, 2, seed=11)
    raw = [codec.RawBlob("fc", "InnerProduct", 1, np.array([0.5, -2, 3e-8], np.float32))]
    params = codec.to_params(codec.decode_model(codec.encode_model("tiny", [q], raw)))
    model = str(tmp_path / "m.caffemodel")
    save_params(params, model)
    proto = tmp_path / "deploy.prototxt"
    proto.write_text('name: "tiny"\nlayer { name: "data" type: "Input" top: "data" '
                     'input_param { shape { dim: 1 dim: 10 } } }\n'
                     'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                     'inner_product_param { num_output: 3 } }\n')
    net = caffe.Net(str(proto), model, caffe.TEST)
    assert np.array_equal(net.params["fc"][0].data.view(np.uint32), q.weights().view(np.uint32))
    assert np.array_equal(net.params["fc"][1].data, raw[0].data)
    assert np.array_equal(load_params(model)["fc"].blobs[0], q.weights())


# ----------------------------------------------------------------------------- hostile headers (issue 12)

def _with_raw_header(data, hjson: bytes):
    return with_header(data, lambda h: hjson)


def test_header_numbers_are_bounded_before_they_are_converted(blob):
    # a 4M-digit integer (minutes of int() on Python 3.9) cannot even fit the header
    huge = b'{"records":' + b"9" * 4_000_000 + b"}"
    with pytest.raises(FormatError, match="header length"):
        codec.decode_model(_with_raw_header(blob, huge))
    # one that fits is refused by length, unconverted
    h = json.loads(blob[14:14 + struct.unpack_from("<I", blob, 10)[0]])
    for literal in (b"9" * 900_000, b"1." + b"5" * 2000, b"1e" + b"9" * 1500):
        text = json.dumps(dict(h, meta={"seed": 0})).encode().replace(b'"seed": 0', b'"seed": ' + literal)
        with pytest.raises(FormatError, match="number of"):
            codec.decode_model(_with_raw_header(blob, text))
    text = json.dumps(dict(h, meta={"seed": 0})).encode().replace(b'"seed": 0', b'"seed": NaN')
    with pytest.raises(FormatError, match="NaN"):
        codec.decode_model(_with_raw_header(blob, text))
    big = json.dumps(dict(h, meta={"seed": 10 ** 999})).encode()      # 1000 digits: an ordinary number
    assert codec.decode_model(_with_raw_header(blob, big)).meta["meta"]["seed"] == 10 ** 999


@pytest.mark.parametrize("edit,match", [
    (lambda h: h["layers"][0].update(name="conv\ud8001"), "surrogate"),      # a lone surrogate in a name
    (lambda h: h.update(net="\udfff"), "surrogate"),
    (lambda h: h.update(meta={"x": ["ok", "\ud800"]}), "surrogate"),
    (lambda h: h.update(meta={"paper_net": ["lenet-5"]}), "paper_net"),
    (lambda h: h.update(meta={"paper_net": 5}), "paper_net"),
    (lambda h: h.update(meta={"source": {"a": 1}}), "source"),
])
def test_header_text_and_meta_types(blob, edit, match):
    with pytest.raises(FormatError, match=match):
        codec.decode_model(with_header(blob, edit))


def test_writer_refuses_what_the_reader_would():
    q = layer("a", (3,), 1.0, 2, 2)
    with pytest.raises(InputError, match="paper_net"):
        codec.encode_model("n", [q], meta={"paper_net": ["x"]})
    with pytest.raises(InputError, match="JSON text"):
        codec.encode_model("n\ud800", [q])
    with pytest.raises(InputError, match="JSON text"):
        codec.encode_model("n", [layer("a\udc00", (3,), 1.0, 2, 2)])
    assert codec.decode_model(codec.encode_model("n", [q], meta={"paper_net": None})).meta["meta"]["paper_net"] is None


def test_a_file_of_empty_blobs_decodes_and_reports():
    """Valid but empty: every figure that inspect and decode print must come out, without a TypeError."""
    from caffe_dc.cli.codec import _entropy_line
    from caffe_dc.codec.storage_table import storage_text, summary_lines

    layers = [layer("e", (0, 4), 0.0, 3, 2), layer("d", (0,), 0.0, 2, 0)]
    raw = [codec.RawBlob("e", "InnerProduct", 1, np.zeros(0, np.float32))]
    dec, stats = codec.decode_model_report(codec.encode_model("empty", layers, raw, meta={"paper_net": "lenet-5"}))
    params = codec.to_params(dec)
    assert [b.shape for lp in params.values() for b in lp.blobs] == [(0, 4), (0,), (0,)]
    for net in (None, "lenet-5"):
        assert "total" in storage_text(stats, net)
        assert "–" in summary_lines(stats, net)[0]
    assert "total" in stats.table() and "entropy" in _entropy_line(stats)
    json.dumps(stats.to_dict())
