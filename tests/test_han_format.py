"""The authors' .net format: hand-built bytes, round trips, corrupt files, and the Caffe glue."""
import struct
import textwrap

import numpy as np
import pytest

from caffe_dc.codec import han_net as hf
from caffe_dc.codec import sparse_format as sf
from caffe_dc.stages import net_format
from caffe_dc.base.errors import FormatError, InputError

# --- a hand-built one-layer file ----------------------------------------------
#
# 'ip1' (4-bit codes), 30 weights, kept at positions 0, 2, 23, 25 with codes 3, 5, 1, 15.
# Entries (gap, code): (0,3) (1,5) | 2 -> 23 skips 20: filler (15,0) lands on 18, then (4,1) on 23 | (1,15).
# Five entries: odd, so both nibble streams end in a half-used byte.
IP1_CODES = np.zeros(30, np.uint8)
IP1_CODES[[0, 2, 23, 25]] = [3, 5, 1, 15]
IP1_CODEBOOK = np.arange(16, dtype=np.float32) * np.float32(0.25)     # [0] = 0.0
IP1_BIAS = np.array([1.5, -2.0], np.float32)
IP1_BYTES = (
    b"\x05\x00\x00\x00"                      # uint32 nz[1] = 5 entries
    + struct.pack("<16f", *[i * 0.25 for i in range(16)])
    + b"\x00\x00\xc0\x3f" b"\x00\x00\x00\xc0"  # bias 1.5, -2.0 (little-endian float32)
    + b"\x53\x10\x0f"                        # codes 3,5 | 0,1 | 15,(0): even entry in the low nibble
    + b"\x10\x4f\x01"                        # gaps  0,1 | 15,4 | 1,(0)
)
IP1_SPEC = [("ip1", 30, 2)]


def test_hand_built_bytes_are_written_exactly():
    assert struct.pack("<f", 0.25) == b"\x00\x00\x80\x3e"
    assert hf.write_net([("ip1", IP1_CODEBOOK, IP1_CODES, IP1_BIAS)]) == IP1_BYTES
    assert len(IP1_BYTES) == 4 + 64 + 8 + 3 + 3


def test_hand_built_bytes_decode():
    (layer,) = hf.read_net(IP1_BYTES, IP1_SPEC)
    assert layer.name == "ip1" and layer.entries == 5
    np.testing.assert_array_equal(layer.codes, IP1_CODES)
    np.testing.assert_array_equal(layer.codebook, IP1_CODEBOOK)
    np.testing.assert_array_equal(layer.bias, IP1_BIAS)
    w = layer.weights
    assert w.dtype == np.float32 and w.shape == (30,)
    np.testing.assert_array_equal(np.flatnonzero(w), [0, 2, 23, 25])
    np.testing.assert_array_equal(w[[0, 2, 23, 25]], [0.75, 1.25, 0.25, 3.75])


def test_two_layers_conv_8bit_then_fc_4bit():
    conv = np.array([0, 200, 0, 0, 7], np.uint8)        # entries (1,200) (2,7)
    cb8 = np.arange(256, dtype=np.float32) / 256
    fc = np.array([0, 0, 9], np.uint8)                  # entry (2,9)
    data = hf.write_net([("conv1", cb8, conv, np.zeros(0, np.float32)), ("fc2", IP1_CODEBOOK, fc, [0.5])])
    expected = (b"\x02\x00\x00\x00" b"\x01\x00\x00\x00"
                + cb8.astype("<f4").tobytes()
                + b"\xc8\x07"                           # 8-bit codes: a byte each
                + b"\x21"                               # gaps 1, 2: 4 bits even in conv layers
                + IP1_CODEBOOK.astype("<f4").tobytes() + struct.pack("<f", 0.5)
                + b"\x09" + b"\x02")
    assert data == expected
    # the reader picks the stored layers out of all parameterised ones, by name
    out = hf.read_net(data, [("conv1", 5, 0), ("scale1", 4, 4), ("fc2", 3, 1)])
    assert [l.name for l in out] == ["conv1", "fc2"]
    np.testing.assert_array_equal(out[0].codes, conv)
    np.testing.assert_array_equal(out[1].codes, fc)


def test_nibble_order_low_first():
    # one packing serves both formats: sparse_format's, as the .net writer and reader use it
    assert sf.pack_nibbles(np.array([1, 2])) == b"\x21"       # a high-first writer would give 0x12
    assert sf.pack_nibbles(np.array([1, 2, 3])) == b"\x21\x03"
    np.testing.assert_array_equal(sf.unpack_nibbles(b"\x21\xf3", 3), [1, 2, 3])   # unused high nibble ignored
    with pytest.raises(FormatError, match="nibble"):
        sf.unpack_nibbles(b"\x21\xf3", 3, strict=True)             # ... unless the caller insists


def test_select_layers():
    names = ["conv1", "fire2/squeeze1x1", "ip1", "fc6", "bn_conv1", "scale1", "clip_fc"]
    assert hf.select_layers(names) == [("conv1", 8), ("ip1", 4), ("fc6", 4), ("bn_conv1", 8), ("clip_fc", 4)]


def _naive_entries(codes):
    gaps, out, prev = [], [], -1
    for p in np.flatnonzero(codes):
        g = p - prev - 1
        while g > 15:
            gaps.append(15)
            out.append(0)
            g -= 16
        gaps.append(g)
        out.append(int(codes[p]))
        prev = p
    return gaps, out


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.3, 1.0])
def test_encoder_matches_naive_loop_and_round_trips(density):
    rng = np.random.default_rng(int(density * 100))
    n = 3001
    codes = rng.integers(1, 16, n).astype(np.uint8)
    codes[rng.random(n) >= density] = 0
    gaps, ent = hf.encode_entries(codes)
    g2, e2 = _naive_entries(codes)
    assert gaps.tolist() == g2 and ent.tolist() == e2
    bias = rng.standard_normal(7).astype(np.float32)
    data = hf.write_net([("fc7", IP1_CODEBOOK, codes, bias)])
    (layer,) = hf.read_net(data, [("fc7", n, 7)])
    np.testing.assert_array_equal(layer.codes, codes)
    np.testing.assert_array_equal(layer.bias, bias)
    assert layer.entries == len(g2)


@pytest.mark.parametrize("gap,fillers", [(15, 0), (16, 1), (31, 1), (32, 2), (47, 2), (48, 3)])
def test_filler_boundaries(gap, fillers):
    codes = np.zeros(gap + 1, np.uint8)
    codes[gap] = 4
    gaps, ent = hf.encode_entries(codes)
    assert gaps.tolist() == [15] * fillers + [gap % 16] and ent.tolist() == [0] * fillers + [4]
    (layer,) = hf.read_net(hf.write_net([("ip", IP1_CODEBOOK, codes, [])]), [("ip", gap + 1, 0)])
    np.testing.assert_array_equal(layer.codes, codes)


def test_truncated_and_trailing_bytes():
    for cut in (1, 3, 10, len(IP1_BYTES) - 1, len(IP1_BYTES) - 4):
        with pytest.raises(FormatError, match="truncated"):
            hf.read_net(IP1_BYTES[:cut], IP1_SPEC)
    with pytest.raises(FormatError, match="left over"):
        hf.read_net(IP1_BYTES + b"\x00", IP1_SPEC)


def test_corrupt_files():
    with pytest.raises(FormatError, match="past"):              # last entry lands on 25 of 25 weights
        hf.read_net(IP1_BYTES, [("ip1", 25, 2)])
    with pytest.raises(FormatError, match="entries"):           # a count larger than the layer
        hf.read_net(b"\xff\xff\xff\xff" + IP1_BYTES[4:], IP1_SPEC)
    bad = bytearray(IP1_BYTES)
    bad[4:8] = struct.pack("<f", 1.0)
    with pytest.raises(FormatError, match="codebook"):
        hf.read_net(bytes(bad), IP1_SPEC)
    bad = bytearray(IP1_BYTES)
    bad[8:12] = struct.pack("<f", float("nan"))
    with pytest.raises(FormatError, match="NaN"):
        hf.read_net(bytes(bad), IP1_SPEC)
    with pytest.raises(FormatError):
        hf.read_net(b"", IP1_SPEC)
    with pytest.raises(InputError):
        hf.read_net(IP1_BYTES, [("relu1", 30, 2)])


def test_writer_rejects_bad_layers():
    with pytest.raises(InputError, match="16-entry"):
        hf.write_net([("ip1", np.zeros(32, np.float32), IP1_CODES, [])])
    cb = IP1_CODEBOOK.copy()
    cb[3] = 0
    with pytest.raises(InputError, match="codebook"):
        hf.write_net([("ip1", cb, IP1_CODES, [])])
    with pytest.raises(InputError, match="conv, fc or ip"):
        hf.write_net([("scale1", IP1_CODEBOOK, IP1_CODES, [])])
    with pytest.raises(InputError, match="codes"):
        hf.write_net([("ip1", IP1_CODEBOOK, np.array([16]), [])])


def test_empty_layer():
    data = hf.write_net([("ip1", IP1_CODEBOOK, np.zeros(40, np.uint8), [1.0])])
    assert data[:4] == b"\x00\x00\x00\x00" and len(data) == 4 + 64 + 4
    (layer,) = hf.read_net(data, [("ip1", 40, 1)])
    assert not layer.weights.any() and layer.entries == 0


def test_codebook_for():
    w = np.array([[0, 0.5, -1], [0.5, 0, 2]], np.float32)
    cb, codes = hf.codebook_for("ip1", w)
    assert cb.size == 16 and cb[0] == 0 and cb[1:4].tolist() == [-1, 0.5, 2] and (cb[4:] == 2).all()
    np.testing.assert_array_equal(cb[codes].reshape(w.shape), w)
    w = np.arange(17, dtype=np.float32)                       # 16 distinct nonzero > 15
    with pytest.raises(InputError, match="quantize with 8 bits for conv layers and 4 bits"):
        hf.codebook_for("fc6", w)
    assert hf.codebook_for("conv1", w)[0].size == 256


# --- with real pycaffe ---------------------------------------------------------

DEPLOY = textwrap.dedent("""\
    name: "tiny"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 3 kernel_size: 3 } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
    """)


@pytest.fixture
def deploy(tmp_path):
    pytest.importorskip("caffe")
    p = tmp_path / "deploy.prototxt"
    p.write_text(DEPLOY)
    return str(p)


def test_import_net_with_caffe(deploy, tmp_path):
    rng = np.random.default_rng(0)
    conv_codes = rng.integers(0, 256, 3 * 2 * 3 * 3).astype(np.uint8)
    conv_codes[rng.random(conv_codes.size) < 0.5] = 0
    ip_codes = rng.integers(0, 16, 5 * 48).astype(np.uint8)
    ip_codes[rng.random(ip_codes.size) < 0.9] = 0               # sparse: fillers needed
    cb8 = np.concatenate([[0], rng.uniform(0.1, 1, 255)]).astype(np.float32)
    layers = [("conv1", cb8, conv_codes, rng.standard_normal(3)), ("ip1", IP1_CODEBOOK, ip_codes, [1, 2, 3, 4, 5])]
    path = tmp_path / "tiny.net"
    path.write_bytes(hf.write_net(layers))
    params = net_format.import_net(deploy, str(path))
    assert list(params) == ["conv1", "ip1"]
    assert params["conv1"].type == "Convolution" and params["ip1"].type == "InnerProduct"
    assert [b.shape for b in params["conv1"].blobs] == [(3, 2, 3, 3), (3,)]
    assert [b.shape for b in params["ip1"].blobs] == [(5, 48), (5,)]
    np.testing.assert_array_equal(params["conv1"].blobs[0].ravel(), cb8[conv_codes])
    np.testing.assert_array_equal(params["ip1"].blobs[0].ravel(), IP1_CODEBOOK[ip_codes])
    np.testing.assert_array_equal(params["ip1"].blobs[1], np.arange(1, 6, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(FormatError):
        net_format.import_net(deploy, str(path))


def test_export_then_import_with_caffe(deploy, tmp_path):
    from caffe_dc.base.params import LayerParams
    from caffe_dc.pycaffe.caffemodel import save_params
    from caffe_dc.algorithms.quantization import quantize_layer

    rng = np.random.default_rng(1)
    wc = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    wi = rng.standard_normal((5, 48)).astype(np.float32)
    wi[rng.random(wi.shape) < 0.8] = 0
    cbc, cc = quantize_layer(wc, 8)
    cbi, ci = quantize_layer(wi, 4)
    params = {"conv1": LayerParams("Convolution", [cbc[cc], np.ones(3, np.float32)]),
              "ip1": LayerParams("InnerProduct", [cbi[ci], np.arange(5, dtype=np.float32)]),
              "ip1_mask": LayerParams("Parameter", [(wi != 0).astype(np.float32)])}   # ignored: not in deploy
    model = tmp_path / "q.caffemodel"
    save_params(params, str(model))
    out = tmp_path / "q.net"
    summary = net_format.export_net(deploy, str(model), str(out))
    assert summary["bytes"] == out.stat().st_size
    ip = summary["layers"][1]
    assert ip["name"] == "ip1" and ip["kept"] == np.count_nonzero(wi) and ip["entries"] >= ip["kept"]
    back = net_format.import_net(deploy, str(out))
    for name in ("conv1", "ip1"):
        for a, b in zip(back[name].blobs, params[name].blobs):
            np.testing.assert_array_equal(a, b)
    # not quantized to the format's 4 bits: a clear InputError
    params["ip1"] = LayerParams("InnerProduct", [rng.standard_normal((5, 48)).astype(np.float32), np.zeros(5, np.float32)])
    save_params(params, str(model))
    with pytest.raises(InputError, match="4 bits"):
        net_format.export_net(deploy, str(model), str(tmp_path / "x.net"))
    with pytest.raises(InputError, match="overwrite"):
        net_format.export_net(deploy, str(model), str(model))


def test_deploy_with_unstorable_layer(tmp_path):
    pytest.importorskip("caffe")
    p = tmp_path / "deploy.prototxt"
    p.write_text(DEPLOY + 'layer { name: "classifier" type: "InnerProduct" bottom: "ip1" top: "out" '
                          'inner_product_param { num_output: 2 } }\n')
    with pytest.raises(InputError, match="classifier"):
        net_format.import_net(str(p), str(tmp_path / "missing.net"))


def _shuffled_net(rng):
    """A .net file like the authors': codebooks in k-means order (not ascending), fillers, odd counts."""
    conv_codes = rng.integers(0, 256, 3 * 2 * 3 * 3).astype(np.uint8)
    conv_codes[rng.random(conv_codes.size) < 0.4] = 0
    ip_codes = rng.integers(0, 16, 5 * 48).astype(np.uint8)
    ip_codes[rng.random(ip_codes.size) < 0.85] = 0
    cb8 = np.concatenate([[0], rng.permutation(rng.uniform(-1, 1, 255))]).astype(np.float32)
    cb4 = np.concatenate([[0], rng.permutation(rng.uniform(-1, 1, 15))]).astype(np.float32)
    return hf.write_net([("conv1", cb8, conv_codes, rng.standard_normal(3)), ("ip1", cb4, ip_codes, rng.standard_normal(5))])


def test_import_then_export_is_byte_exact(deploy, tmp_path):
    from caffe_dc.base.params import LayerParams
    from caffe_dc.pycaffe.caffemodel import save_params

    original = _shuffled_net(np.random.default_rng(5))
    path = tmp_path / "orig.net"
    path.write_bytes(original)
    params = net_format.import_net(deploy, str(path), codebooks=True)
    assert list(params) == ["conv1", "ip1", "conv1_codebook", "conv1_codes", "ip1_codebook", "ip1_codes"]
    model = tmp_path / "m.caffemodel"
    save_params(params, str(model))
    net_format.export_net(deploy, str(model), str(tmp_path / "back.net"))
    assert (tmp_path / "back.net").read_bytes() == original
    # without its codebooks the layer's codebook is rebuilt ascending: other bytes, the same weights
    save_params({n: lp for n, lp in params.items() if n in ("conv1", "ip1")}, str(model))
    net_format.export_net(deploy, str(model), str(tmp_path / "sorted.net"))
    assert (tmp_path / "sorted.net").read_bytes() != original
    back = net_format.import_net(deploy, str(tmp_path / "sorted.net"))
    for n in ("conv1", "ip1"):
        assert all(np.array_equal(a, b) for a, b in zip(back[n].blobs, params[n].blobs))
    # stale codebook blobs (the weights moved since) are not trusted
    stale = dict(params)
    w = params["ip1"].blobs[0].copy()
    w[w != 0] *= 2
    stale["ip1"] = LayerParams("InnerProduct", [w, params["ip1"].blobs[1]])
    save_params(stale, str(model))
    net_format.export_net(deploy, str(model), str(tmp_path / "stale.net"))
    assert np.array_equal(net_format.import_net(deploy, str(tmp_path / "stale.net"))["ip1"].blobs[0], w)
