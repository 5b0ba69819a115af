"""Fuzz the decoder: truncations, bit flips, and corruptions with recomputed CRCs.

Every corrupted input must either raise ``FormatError`` with a message or, if
it happens to stay valid, decode without any other exception and go through
what ``decode`` and ``inspect`` do with the result (``use``) -- never hang,
never allocate much memory. Random flips are nearly always caught by the
CRCs, so most cases recompute the CRCs after corrupting (as a hostile file
would) to exercise the structural checks behind them.

A fixed number of cases (``FUZZ_CASES``, default 5000, about 10 s) from a fixed
seed (``FUZZ_SEED``), so a run does the same work on a fast or a loaded machine;
the seed and case are printed on failure.
"""
import json
import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from caffe_dc.codec import model as codec
from caffe_dc.base.errors import FormatError

FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "5000"))
PEAK_LIMIT = 64 << 20          # bytes traced at once during any decode
# A file may legitimately declare a large, mostly-zero blob; the decoder's guard against that
# is ``max_weights`` (checked before allocating). The model has ~11K values, so a cap of 64K
# lets every genuine variant through while making any *other* large allocation show up here.
MAX_WEIGHTS = 1 << 16
# Not a speed check (tools/bench_codec.py is): a guard that turns a decoder stuck in a loop into
# a failure naming the case. One decode takes about a millisecond.
HANG_LIMIT = 30.0


def model():
    """Every kind of record: sparse with plain and compact length tables (conv1's codes, fc1's 7-bit
    gaps), dense (conv2: index bits 0, format 1.1), an empty blob; meta as encode writes it."""
    rng = np.random.RandomState(7)
    layers, raw = [], []
    for name, shape, density, wb, ib in [("conv1", (8, 3, 5, 5), 0.6, 8, 4), ("conv2", (16, 8, 3, 3), 0.3, 6, 0),
                                        ("fc1", (64, 128), 0.08, 5, 7), ("fc2", (10, 64), 0.25, 2, 1),
                                        ("empty", (0, 4), 0.0, 3, 2)]:
        k = 1 << wb
        cb = np.zeros(k, np.float32)
        cb[1:] = rng.randn(k - 1)
        size = int(np.prod(shape))
        p = np.abs(rng.randn(k - 1)) + 0.05
        codes = np.where(rng.rand(size) < density, 1 + rng.choice(k - 1, size=size, p=p / p.sum()), 0)
        ltype = "Convolution" if name.startswith("conv") else "InnerProduct"
        layers.append(codec.QuantizedLayer(name, ltype, 0, cb, codes.reshape(shape), wb, ib))
        raw.append(codec.RawBlob(name, ltype, 1, rng.randn(shape[0]).astype(np.float32)))
    return codec.encode_model("fuzz", layers, raw, meta={"source": "fuzz", "paper_net": "lenet-5"}, block_size=32,
                              raw_fallback=False)    # keep the empty quantized record (kind 3: test_codec_raw_fallback)


def use(dec, stats):
    """What `decode` and `inspect` do with a decoded file: the caffemodel's blobs, the tables and figures."""
    from caffe_dc.cli.codec import _entropy_line
    from caffe_dc.codec.storage_table import storage_text, summary_lines

    params = codec.to_params(dec)
    assert all(isinstance(b, np.ndarray) for lp in params.values() for b in lp.blobs)
    net = (dec.meta.get("meta") or {}).get("paper_net")
    text = [storage_text(stats, net), stats.table(), _entropy_line(stats)] + summary_lines(stats, net)
    json.dumps(stats.to_dict())
    return params, text


def fix_crcs(data: bytearray) -> bytes:
    """Recompute the header CRC and every record CRC that the (possibly broken) framing still locates."""
    if len(data) >= 14:
        h = struct.unpack_from("<I", data, 10)[0]
        if 18 + h <= len(data):
            struct.pack_into("<I", data, 14 + h, zlib.crc32(bytes(data[:14 + h])) & 0xFFFFFFFF)
            pos = 18 + h
            while pos + 4 <= len(data):
                n = struct.unpack_from("<I", data, pos)[0]
                if pos + 8 + n > len(data):
                    break
                struct.pack_into("<I", data, pos + 4 + n, zlib.crc32(bytes(data[pos:pos + 4 + n])) & 0xFFFFFFFF)
                pos += 8 + n
    return bytes(data)


def mutate(blob: bytes, rng: np.random.RandomState):
    d = bytearray(blob)
    kind = rng.randint(7)
    if kind == 0:                                        # truncation
        return "truncate", bytes(d[:rng.randint(len(d))])
    if kind == 1:                                        # raw bit flips (CRC will usually catch)
        for _ in range(rng.randint(1, 9)):
            i = rng.randint(len(d))
            d[i] ^= 1 << rng.randint(8)
        return "flip", bytes(d)
    if kind in (2, 3, 4):                                # flips behind recomputed CRCs
        for _ in range(rng.randint(1, 4)):
            i = rng.randint(len(d))
            d[i] ^= 1 << rng.randint(8)
        return "flip+crc", fix_crcs(d)
    if kind == 5:                                        # random bytes or a random u32 written somewhere
        i = rng.randint(len(d) - 4)
        if rng.rand() < 0.5:
            struct.pack_into("<I", d, i, int(rng.choice([0, 1, 2 ** 31, 2 ** 32 - 1, rng.randint(2 ** 31)])))
        else:
            d[i:i + 4] = rng.bytes(4)
        return "field+crc", fix_crcs(d)
    # insert or delete a chunk, then fix CRCs where the framing still parses
    i = rng.randint(len(d))
    if rng.rand() < 0.5:
        d[i:i] = rng.bytes(rng.randint(1, 16))
    else:
        del d[i:i + rng.randint(1, 16)]
    return "splice+crc", fix_crcs(d)


def test_fuzz_decoder():
    blob = model()
    clean = codec.decode_model(blob)
    assert len(clean.layers) == 5 and blob[9] == 1              # a format 1.1 file
    use(*codec.decode_model_report(blob))
    seed = int(os.environ.get("FUZZ_SEED", "12345"))
    rng = np.random.RandomState(seed)
    counts = {}
    decoded_ok = 0
    tracemalloc.start()
    try:
        case = 0
        while case < FUZZ_CASES:
            case += 1
            kind, data = mutate(blob, rng)
            counts[kind] = counts.get(kind, 0) + 1
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            try:
                use(*codec.decode_model_report(data, max_weights=MAX_WEIGHTS))  # a surviving file must be usable
                decoded_ok += 1
            except FormatError as e:
                assert str(e).strip(), "empty FormatError message (case %d, %s)" % (case, kind)
            except Exception as e:  # pragma: no cover - this is the failure being hunted
                pytest.fail("seed %d case %d (%s): %s: %s" % (seed, case, kind, type(e).__name__, e))
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            assert dt < HANG_LIMIT, "seed %d case %d (%s) took %.1f s" % (seed, case, kind, dt)
            assert peak < PEAK_LIMIT, "seed %d case %d (%s) allocated %d MiB" % (seed, case, kind, peak >> 20)
    finally:
        tracemalloc.stop()
    print("fuzz: %d cases %s, %d decoded without error" % (case, counts, decoded_ok))


def test_crc_fixed_payload_corruption_is_caught_structurally():
    """Flip bits only inside Huffman payloads, CRCs fixed: each case must end in FormatError or decode."""
    blob = model()
    rng = np.random.RandomState(1)
    caught = 0
    for _ in range(300):
        d = bytearray(blob)
        i = rng.randint(len(d) - 200, len(d) - 8)    # the tail: fc2/empty payloads and raw blobs
        d[i] ^= 1 << rng.randint(8)
        try:
            codec.decode_model(fix_crcs(d))
        except FormatError:
            caught += 1
    assert caught > 0
