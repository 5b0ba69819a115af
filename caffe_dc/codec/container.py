"""The compressed blob file (``.dcz``): bytes <-> records, validated.

Modelled on the NPY format: a magic string, a (major, minor) version, a
length-prefixed JSON header that describes the net, then binary records,
each with its own length and CRC32. ``docs/format.md`` is the byte-level
specification; this module is its reference implementation.

A record holds one blob of one layer, either

* **quantized** (``QuantizedBlob``): float32 codebook of ``2**weight_bits``
  entries (entry 0 the reserved 0.0) and the integer code of every weight,
  stored as relative-index sparse entries (``sparse_format``) whose two
  streams -- codes and gaps -- are entropy coded (``entropy.Coder``:
  canonical Huffman, ``huffman``, unless another coder is asked for);
  since format 1.1 also dense (``index_bits`` 0: every code up to the last
  kept weight, no gap stream), with the index width chosen per layer for
  the smallest record if asked (``index_bits`` None, ``choose_index_bits``),
  and with code-length tables Huffman-coded where that is shorter; or
* **raw** (``RawBlob``): float32 values as they are (biases, BatchNorm
  statistics, anything not compressed); since format 1.2 also a quantized
  blob's weights (``RawBlob.quantized``, record kind 3) where its quantized
  record would be larger than its values: a small layer with a wide
  codebook (a 3x3x1x4 convolution and 256 float32 centroids). ``write``
  makes that choice itself, so no record is larger than raw.

Reading never trusts a length: every count is checked against the bytes
that remain and against the record's declared shape before anything is
allocated, the decoded total is capped (``max_weights``), and every failure
is a ``FormatError`` saying where and what. Nothing is pickled; every
multi-byte field is little-endian with an explicit dtype.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from caffe_dc.codec import sparse_format
from caffe_dc.codec.entropy import DEFAULT_BLOCK, MAX_BLOCK, MAX_CODE_LEN, Coder, Stream
from caffe_dc.codec.huffman import HUFFMAN
from caffe_dc.base.errors import FormatError, InputError, InternalError
from caffe_dc.base.limits import MAX_BITS, bits_in_range  # weight and index bits: alphabets <= 4096 symbols

MAGIC = b"\x93CAFFEDC"
VERSION = (1, 2)                 # the newest this module reads; it writes the oldest its records need
FORMAT_NAME = "caffe-dc"
KIND_RAW, KIND_QUANTIZED, KIND_QUANTIZED_RAW = 1, 2, 3   # 3 (1.2): a quantized blob's weights stored raw
MAX_NDIM = 32                    # Caffe's kMaxBlobAxes
MAX_HEADER = 1 << 20             # JSON header bytes (VGG-16's is ~2 KB): parsed, it stays a few MB at most
MAX_NUMBER = 1000                # characters of a number in the header, checked before it is converted
DEFAULT_MAX_WEIGHTS = 1 << 28    # decoded values per file (~2x VGG-16); raise it explicitly for more
# The entropy coders a file may name (header "coder"); absent, it is Huffman, the format's.
CODERS: Dict[str, Coder] = {HUFFMAN.name: HUFFMAN}
DEFAULT_CODER = HUFFMAN.name
_U32 = (1 << 32) - 1

_FILE_HEAD = struct.Struct("<8sBBI")      # magic, major, minor, header length
_U32S = struct.Struct("<I")
_REC_PREFIX = struct.Struct("<BBHI")      # kind, ndim, blob index, layer index
_QUANT_FIXED = struct.Struct("<BBHIIIII")  # weight_bits, index_bits, reserved, entries, fillers,
#                                            block size, code-stream bits, gap-stream bits
_COMPACT = 0x80                  # 1.1: flag in the weight_bits / index_bits byte: that stream's table is Huffman-coded
_TABLE_BITS = struct.Struct("<H")         # 1.1: a Huffman-coded length table's payload bits
_META = 16                       # the alphabet of code lengths 0..15 (a Huffman-coded table codes them)


@dataclass
class QuantizedBlob:
    """One quantized blob: ``weights == codebook[codes]`` exactly (float32)."""
    name: str
    type: str
    blob: int
    codebook: np.ndarray     # float32, length 2**weight_bits, codebook[0] == 0.0
    codes: np.ndarray        # integer, the blob's shape; 0 where pruned
    weight_bits: int
    index_bits: Optional[int]  # 1..12; 0: dense (1.1); None: the writer picks the smallest (choose_index_bits)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(np.shape(self.codes))

    def weights(self) -> np.ndarray:
        if np.size(self.codes) == 0:  # no gather at all: numpy may size its buffers by the axes
            return np.zeros(np.shape(self.codes), dtype=np.float32)
        return np.asarray(self.codebook, dtype=np.float32)[self.codes]


@dataclass
class RawBlob:
    """One blob stored as raw float32 (biases and anything not quantized).

    ``quantized``: the blob is a quantized layer's weights (``codebook[codes]``)
    kept raw because its quantized record would be larger (record kind 3,
    format 1.2); the reports count it among the compressed layers.
    """
    name: str
    type: str
    blob: int
    data: np.ndarray
    quantized: bool = False


Blob = Union[QuantizedBlob, RawBlob]


class RecordInfo(NamedTuple):
    """Sizes of one record as stored, for the compression reports (all in bits unless noted)."""
    kind: str                 # "quantized", "raw", or "quantized-raw" (a quantized blob's weights stored raw)
    name: str
    blob: int
    shape: Tuple[int, ...]
    record_bytes: int         # the whole record in the file: length field, body, CRC
    entries: int = 0          # sparse entries, fillers included
    fillers: int = 0
    nonzero: int = 0          # kept weights (entries - fillers; the nonzero values of a quantized-raw record)
    weight_bits: int = 0
    index_bits: int = 0
    codebook_bits: int = 0    # 32 * 2**weight_bits
    code_bits: int = 0        # Huffman payload of the code stream (exact, without padding)
    gap_bits: int = 0         # Huffman payload of the gap stream
    table_bits: int = 0       # the two code-length tables (4 bits per symbol)
    offset_bits: int = 0      # the two block-offset tables (32 bits per block after the first)
    code_counts: Optional[np.ndarray] = None   # symbol histograms, for entropy figures
    gap_counts: Optional[np.ndarray] = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# ============================================================================ writing

def as_codes(codes, k: int, where: str) -> np.ndarray:
    """User codes -> the smallest unsigned array that holds them, range-checked."""
    c = np.asarray(codes)
    if c.dtype.kind == "f":  # codes saved in a caffemodel blob come back as float
        if c.size and not np.array_equal(c, np.floor(c)):
            raise InputError("%s: codes must be whole numbers" % where)
    elif c.dtype.kind not in "iub":
        raise InputError("%s: codes must be integers, not %s" % (where, c.dtype))
    if c.size:
        lo = 0 if c.dtype.kind in "ub" else c.min()   # one pass fewer over unsigned codes
        hi = c.max()
        if lo < 0 or hi >= k:
            raise InputError("%s: codes span %s..%s but the codebook has %d entries" % (where, lo, hi, k))
    return c.astype(np.uint8 if k <= 256 else np.uint16, copy=False)


def _shape_bytes(shape) -> bytes:
    if len(shape) > MAX_NDIM:
        raise InputError("a blob of %d axes (Caffe allows %d)" % (len(shape), MAX_NDIM))
    if any(not 0 <= int(d) <= _U32 for d in shape):
        raise InputError("blob shape %s does not fit 32-bit dimensions" % (tuple(shape),))
    return struct.pack("<%dI" % len(shape), *[int(d) for d in shape])


def _frame(body: bytes) -> bytes:
    """Length prefix + body + CRC32 of both."""
    if len(body) > _U32:
        raise InputError("a record of %d bytes is too large for the format (4 GiB limit)" % len(body))
    head = _U32S.pack(len(body))
    return head + body + _U32S.pack(zlib.crc32(body, zlib.crc32(head)) & _U32)


def length_table(lengths, coder: Coder = HUFFMAN) -> Tuple[bytes, bool]:
    """A stream's stored code-length table, and whether it is the compact (format 1.1) kind.

    Plain: 4 bits per symbol (``sparse_format.pack_nibbles``). Compact: the
    lengths coded by ``coder`` -- u16 payload bits, the 16 code lengths of the
    length values 0..15 as nibbles, then the payload -- which wins on wide
    alphabets (8-bit codes, wide gap fields) where most lengths repeat or
    are 0. The shorter is written; plain on a tie.
    """
    if np.size(lengths) and not 0 <= int(np.min(lengths)) <= int(np.max(lengths)) <= MAX_CODE_LEN:
        raise InternalError("a code-length table outside 0..%d: the entropy coder is broken" % MAX_CODE_LEN)
    lengths = np.asarray(lengths, dtype=np.uint8)
    plain = sparse_format.pack_nibbles(lengths)
    meta = coder.table(np.bincount(lengths, minlength=_META))
    st = coder.encode(lengths, meta, max(1, lengths.size))
    if 2 + _META // 2 + len(st.payload) >= len(plain):
        return plain, False
    return _TABLE_BITS.pack(st.n_bits) + sparse_format.pack_nibbles(meta) + st.payload, True


def _check_bits(wb, ib, where: str) -> Tuple[int, Optional[int]]:
    if not (bits_in_range(wb) and (ib is None or bits_in_range(ib, 0))):
        raise InputError("%s: weight_bits %r must be in 1..%d and index_bits %r in 0..%d (0: dense) or None (auto)"
                         % (where, wb, MAX_BITS, ib, MAX_BITS))
    return int(wb), None if ib is None else int(ib)


def _encode_quantized(b: QuantizedBlob, layer_idx: int, block_size: int,
                      coder: Coder) -> Tuple[bytes, RecordInfo, bool]:
    """The record, its sizes, and whether it needs format 1.1 (a dense record or a compact table)."""
    where = "layer %r blob %d" % (b.name, b.blob)
    wb, ib = _check_bits(b.weight_bits, b.index_bits, where)
    k = 1 << wb
    cb = np.asarray(b.codebook)
    if cb.ndim != 1 or cb.size != k:
        raise InputError("%s: codebook has shape %s, need %d entries for %d bits" % (where, cb.shape, k, wb))
    cb = cb.astype("<f4")
    if cb[0] != 0.0:
        raise InputError("%s: codebook[0] is %r, but entry 0 is reserved for pruned weights (0.0)" % (where, float(cb[0])))
    codes = as_codes(b.codes, k, where)
    if ib is None:
        ib = choose_index_bits(codes, k, block_size, coder)
    gaps, ecodes = sparse_format.to_entries(codes.ravel(), ib)
    n = int(gaps.size)
    code_counts = np.bincount(ecodes, minlength=k)
    fillers = int(code_counts[0])
    cl = coder.table(code_counts)
    cs = coder.encode(ecodes, cl, block_size)
    del ecodes
    ctab, c_compact = length_table(cl, coder)
    if ib:
        gap_counts = np.bincount(gaps, minlength=1 << ib)
        gl = coder.table(gap_counts)
        gs = coder.encode(gaps, gl, block_size)
        gtab, g_compact = length_table(gl, coder)
    else:   # dense: every position up to the last kept weight is an entry, all gaps 0: no gap stream
        gap_counts = np.array([n])
        gs, gtab, g_compact = Stream(b"", 0, block_size, np.zeros(0, np.int64)), b"", False
    del gaps
    if n > _U32 or max(cs.n_bits, gs.n_bits) > _U32:
        raise InputError("%s: %d entries are too many for the format's 32-bit counters" % (where, n))
    body = b"".join([
        _REC_PREFIX.pack(KIND_QUANTIZED, len(codes.shape), b.blob, layer_idx), _shape_bytes(codes.shape),
        _QUANT_FIXED.pack(wb | (_COMPACT if c_compact else 0), ib | (_COMPACT if g_compact else 0), 0,
                          n, fillers, block_size, cs.n_bits, gs.n_bits),
        cb.tobytes(),
        cs.offsets.astype("<u4").tobytes(), gs.offsets.astype("<u4").tobytes(),
        ctab, gtab,
        cs.payload, gs.payload,
    ])
    rec = _frame(body)
    info = RecordInfo("quantized", b.name, b.blob, tuple(codes.shape), len(rec), n, fillers, n - fillers, wb, ib,
                      32 * k, cs.n_bits, gs.n_bits, 8 * (len(ctab) + len(gtab)),
                      32 * (cs.offsets.size + gs.offsets.size), code_counts, gap_counts)
    return rec, info, ib == 0 or c_compact or g_compact


def choose_index_bits(codes, k: int, block_size: int = DEFAULT_BLOCK, coder: Coder = HUFFMAN) -> int:
    """The index width, 0..MAX_BITS (0: dense), whose record for ``codes`` is the smallest.

    Exact, without encoding: for each width the fillers and both streams'
    histograms follow from the histogram of the raw gaps, and the coder's
    tables give the payload bits; tables and block offsets are added as
    the writer would write them. Widths past the longest gap add nothing
    but table, so the search stops there. The first of equal sizes wins.
    """
    flat = np.asarray(codes).ravel()
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        return 0
    kept = np.bincount(flat[nz], minlength=k).astype(np.int64)
    raw = np.diff(nz, prepend=-1) - 1
    if int(raw.max()) < (1 << 20):
        g_cnt = np.bincount(raw)
        g_val = np.flatnonzero(g_cnt)
        g_cnt = g_cnt[g_val]
    else:
        g_val, g_cnt = np.unique(raw, return_counts=True)
    del raw

    def stream_bytes(counts, n):
        lengths = coder.table(counts)
        bits = coder.payload_bits(counts, lengths)
        return len(length_table(lengths, coder)[0]) + (bits + 7) // 8 + 4 * max(0, -(-n // block_size) - 1)

    best = None
    for ib in range(min(MAX_BITS, int(g_val[-1]).bit_length()) + 1):
        fill = int((g_cnt * (g_val >> ib)).sum())
        n = int(nz.size) + fill
        code_counts = kept.copy()
        code_counts[0] += fill
        size = stream_bytes(code_counts, n)
        if ib:
            mask = (1 << ib) - 1
            gap_counts = np.bincount(g_val & mask, weights=g_cnt, minlength=mask + 1).astype(np.int64)
            gap_counts[mask] += fill
            size += stream_bytes(gap_counts, n)
        if best is None or size < best[0]:
            best = (size, ib)
    return best[1]


def raw_record_bytes(shape) -> int:
    """The bytes of a raw (or quantized-raw) record of this shape: length, prefix, dims, f32 values, CRC."""
    return 4 + _REC_PREFIX.size + 4 * len(shape) + 4 * int(np.prod(shape, dtype=np.int64)) + 4


def _encode_raw(b: RawBlob, layer_idx: int) -> Tuple[bytes, RecordInfo]:
    a = np.asarray(b.data)
    if a.dtype.kind not in "fiub":
        raise InputError("layer %r blob %d: raw data must be numeric, not %s" % (b.name, b.blob, a.dtype))
    a = np.asarray(a, dtype="<f4")    # not ascontiguousarray: it makes a 0-d blob 1-d; tobytes() is C order anyway
    kind = KIND_QUANTIZED_RAW if b.quantized else KIND_RAW
    body = _REC_PREFIX.pack(kind, a.ndim, b.blob, layer_idx) + _shape_bytes(a.shape) + a.tobytes()
    rec = _frame(body)
    if b.quantized:
        return rec, RecordInfo("quantized-raw", b.name, b.blob, tuple(a.shape), len(rec),
                               nonzero=int(np.count_nonzero(a)))
    return rec, RecordInfo("raw", b.name, b.blob, tuple(a.shape), len(rec))


def _encode_smaller(b: QuantizedBlob, layer_idx: int, block_size: int,
                    raw_fallback: bool, coder: Coder) -> Tuple[bytes, RecordInfo, int]:
    """A quantized blob's record, or (``raw_fallback``) its weights raw, kind 3, where that is smaller;
    and the minor version the record needs.

    The raw values are ``codebook[codes]`` in float32, so either record
    decodes to the same bits. On a tie the quantized record stays.
    """
    rec, info, v11 = _encode_quantized(b, layer_idx, block_size, coder)
    if not raw_fallback or len(rec) <= raw_record_bytes(info.shape):
        return rec, info, int(v11)
    cb = np.asarray(b.codebook).astype(np.float32)
    values = cb[as_codes(b.codes, cb.size, "layer %r blob %d" % (b.name, b.blob))]
    rec, info = _encode_raw(RawBlob(b.name, b.type, b.blob, values, quantized=True), layer_idx)
    return rec, info, 2


def _catalog(blobs: Sequence[Blob]) -> Tuple[List[dict], List[Blob]]:
    """Layers in order of first appearance, and the blobs sorted by (layer, blob index)."""
    layers: Dict[str, dict] = {}
    seen: Dict[str, set] = {}
    for b in blobs:
        if not isinstance(b, (QuantizedBlob, RawBlob)):
            raise InputError("expected QuantizedBlob or RawBlob, got %r" % type(b).__name__)
        if not isinstance(b.name, str) or not b.name or not isinstance(b.type, str):
            raise InputError("blob of layer %r: layer name and type must be non-empty strings" % (b.name,))
        if not 0 <= int(b.blob) <= 0xFFFF:
            raise InputError("layer %r: blob index %r out of range" % (b.name, b.blob))
        if b.name not in layers:
            layers[b.name] = {"name": b.name, "type": b.type, "blobs": 0}
            seen[b.name] = set()
        elif layers[b.name]["type"] != b.type:
            raise InputError("layer %r is given as both %s and %s" % (b.name, layers[b.name]["type"], b.type))
        if int(b.blob) in seen[b.name]:
            raise InputError("layer %r blob %d is given twice" % (b.name, b.blob))
        seen[b.name].add(int(b.blob))
    for name, s in seen.items():
        if s != set(range(len(s))):
            raise InputError("layer %r: blobs %s given; every blob 0..n-1 must be stored" % (name, sorted(s)))
        layers[name]["blobs"] = len(s)
    order = {n: i for i, n in enumerate(layers)}
    return list(layers.values()), sorted(blobs, key=lambda b: (order[b.name], int(b.blob)))


def write(net: str, blobs: Sequence[Blob], meta: Optional[dict] = None, block_size: int = DEFAULT_BLOCK,
          raw_fallback: bool = True, coder: str = DEFAULT_CODER) -> Tuple[bytes, List[RecordInfo]]:
    """Serialise blobs into a ``.dcz`` file; returns the bytes and per-record sizes.

    ``raw_fallback`` (default): a quantized blob whose record would be larger
    than its values stored raw is stored raw (kind 3), so no record is larger
    than raw. False writes every ``QuantizedBlob`` as a quantized record
    (the spec's worked examples, tests of that record's fields). ``coder``:
    the name of the entropy coder in ``CODERS``; a file of any but Huffman
    names its coder in the header.
    """
    if not 1 <= int(block_size) <= MAX_BLOCK:
        raise InputError("block_size must be in 1..%d" % MAX_BLOCK)
    if coder not in CODERS:
        raise InputError("no entropy coder %r (known: %s)" % (coder, ", ".join(sorted(CODERS))))
    layers, ordered = _catalog(blobs)
    header = {"format": FORMAT_NAME, "net": str(net), "layers": layers, "records": len(ordered),
              "meta": dict(meta or {})}
    if coder != DEFAULT_CODER:
        header["coder"] = coder
    for key, types in META_TYPES.items():
        if key in header["meta"] and not isinstance(header["meta"][key], types):
            raise InputError("meta %r must be %s" % (key, " or ".join(t.__name__ for t in types)))
    try:
        json.dumps(header, ensure_ascii=False).encode("utf-8")     # lone surrogates are no text
        hjson = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise InputError("header metadata is not plain JSON text: %s" % e)
    if len(hjson) > MAX_HEADER:
        raise InputError("header of %d bytes exceeds the %d-byte limit" % (len(hjson), MAX_HEADER))
    parts, infos, minor = [], [], 0
    index = {l["name"]: i for i, l in enumerate(layers)}
    for b in ordered:
        if isinstance(b, QuantizedBlob):
            rec, info, needs = _encode_smaller(b, index[b.name], int(block_size), raw_fallback, CODERS[coder])
        else:
            rec, info = _encode_raw(b, index[b.name])
            needs = 2 if b.quantized else 0
        minor = max(minor, needs)
        parts.append(rec)
        infos.append(info)
    # The oldest version that holds every record: a file without 1.1 (1.2) records is a 1.0 (1.1) file, byte for byte.
    head = _FILE_HEAD.pack(MAGIC, VERSION[0], minor, len(hjson)) + hjson
    return b"".join([head, _U32S.pack(zlib.crc32(head) & _U32)] + parts), infos


# ============================================================================ reading

class _Cursor:
    """Bounds-checked reads from a bytes-like object; every overrun is a FormatError."""

    def __init__(self, data, start: int, end: int, where: str):
        self.data, self.pos, self.end, self.where = data, start, end, where

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.end - self.pos:
            raise FormatError("%s: truncated: %s needs %d bytes, %d left" % (self.where, what, n, self.end - self.pos))
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def unpack(self, st: struct.Struct, what: str):
        return st.unpack(self.take(st.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * itemsize, what), dtype=dtype)


def _number(convert):
    """A JSON number hook that refuses long literals before converting them (a 4M-digit integer would
    take minutes: int() is quadratic in the digits)."""
    def parse(text: str):
        if len(text) > MAX_NUMBER:
            raise FormatError("header holds a number of %d characters (limit %d)" % (len(text), MAX_NUMBER))
        return convert(text)
    return parse


def _no_constant(name: str):
    raise FormatError("header holds %s, which is not JSON" % name)


# Keys of the free-form 'meta' that caffe-dc itself reads, and the types it accepts for them.
META_TYPES = {"paper_net": (str, type(None)), "source": (str,)}


def _check_header(h, total_records_bytes: int) -> Tuple[List[dict], int]:
    if not isinstance(h, dict):
        raise FormatError("header is not a JSON object")
    if h.get("format") != FORMAT_NAME:
        raise FormatError("header 'format' is %r, expected %r" % (h.get("format"), FORMAT_NAME))
    if not isinstance(h.get("net"), str):
        raise FormatError("header 'net' must be a string")
    coder = h.get("coder", DEFAULT_CODER)
    if not isinstance(coder, str) or coder not in CODERS:
        raise FormatError("header 'coder' is %r, an entropy coder this reader does not know (it knows %s)"
                          % (coder, ", ".join(sorted(CODERS))))
    meta = h.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError("header 'meta' must be an object")
    for key, types in META_TYPES.items():
        if key in meta and not isinstance(meta[key], types):
            raise FormatError("header 'meta.%s' must be %s, not %s" % (
                key, " or ".join("null" if t is type(None) else "a string" for t in types), type(meta[key]).__name__))
    layers = h.get("layers")
    if not isinstance(layers, list):
        raise FormatError("header 'layers' must be a list")
    names = set()
    total = 0
    for i, l in enumerate(layers):
        if not (isinstance(l, dict) and isinstance(l.get("name"), str) and l["name"]
                and isinstance(l.get("type"), str) and type(l.get("blobs")) is int and 1 <= l["blobs"] <= 0xFFFF):
            raise FormatError("header layer %d is malformed (need name, type, blobs >= 1)" % i)
        if l["name"] in names:
            raise FormatError("header lists layer %r twice" % l["name"])
        names.add(l["name"])
        total += l["blobs"]
    n = h.get("records")
    if type(n) is not int or n != total:
        raise FormatError("header says %r records but its layers have %d blobs" % (n, total))
    if n * 16 > total_records_bytes:  # the smallest record is 16 bytes
        raise FormatError("truncated: %d records cannot fit in the %d bytes left" % (n, total_records_bytes))
    return layers, n


def bytes_view(data) -> memoryview:
    """A flat byte view of any bytes-like object (no copy)."""
    v = memoryview(data)
    return v if (v.format == "B" and v.ndim == 1) else v.cast("B")


def read_header(data) -> Tuple[dict, int]:
    """Validate magic, version, header length and CRC; returns (header dict, offset of first record)."""
    data = bytes_view(data)
    if len(data) < _FILE_HEAD.size:
        if not len(data) or bytes(data[:len(MAGIC)]) != MAGIC[:len(data)]:
            raise FormatError("not a caffe-dc compressed file (bad magic)")
        raise FormatError("truncated: %d bytes, shorter than the file header" % len(data))
    magic, major, minor, hlen = _FILE_HEAD.unpack(data[:_FILE_HEAD.size])
    if magic != MAGIC:
        raise FormatError("not a caffe-dc compressed file (bad magic %r)" % bytes(magic))
    if major != VERSION[0] or minor > VERSION[1]:
        raise FormatError("unsupported format version %d.%d (this reader knows %d.0 to %d.%d)"
                          % (major, minor, VERSION[0], VERSION[0], VERSION[1]))
    if hlen > MAX_HEADER:
        raise FormatError("header length %d exceeds the %d-byte limit" % (hlen, MAX_HEADER))
    end = _FILE_HEAD.size + hlen
    if end + 4 > len(data):
        raise FormatError("truncated: the header needs %d bytes, the file has %d" % (end + 4, len(data)))
    crc, = _U32S.unpack(data[end:end + 4])
    if zlib.crc32(data[:end]) & _U32 != crc:
        raise FormatError("header CRC mismatch (file corrupt)")
    try:
        h = json.loads(bytes(data[_FILE_HEAD.size:end]).decode("utf-8"), parse_int=_number(int),
                       parse_float=_number(float), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError("header is not valid JSON: %s" % str(e)[:200])
    try:   # JSON escapes can spell lone surrogates, which are no text: refuse them here, not when printed
        json.dumps(h, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("header holds a string that is not valid Unicode text (a lone surrogate)")
    layers, _ = _check_header(h, len(data) - end - 4)
    h["version"] = [major, minor]
    return h, end + 4


class _Pending(NamedTuple):
    """A parsed, validated quantized record waiting for the joint decoding pass."""
    name: str
    type: str
    blob: int
    shape: Tuple[int, ...]
    codebook: np.ndarray
    wb: int
    ib: int
    entries: int
    fillers: int
    code: Tuple[Stream, object]            # the stream and its code lengths: an array, or
    gap: Optional[Tuple[Stream, object]]   # a compact table's decode job; no gap stream if dense
    info: RecordInfo
    where: str                                     # "record i (layer 'name' blob j)", for errors


def read(data, max_weights: int = DEFAULT_MAX_WEIGHTS) -> Tuple[dict, List[Blob], List[RecordInfo]]:
    """Parse and fully validate a ``.dcz`` file; returns (header, blobs in file order, sizes).

    Two passes: every record is framed, checked and parsed (raw blobs in
    full), then the streams of all quantized records are decoded together
    (``Coder.decode``; Huffman's is ``huffman.decode_many``).
    """
    data = bytes_view(data)
    h, pos = read_header(data)
    layers = h["layers"]
    out: List[Optional[Blob]] = []
    infos: List[Optional[RecordInfo]] = []
    pending: List[Tuple[int, _Pending]] = []
    total_values = 0
    prev = (-1, -1)
    for r in range(h["records"]):
        cur, kind, lidx, bidx, shape, rec_end = _open_record(data, pos, r, h["records"], layers, prev)
        lay, where = layers[lidx], cur.where
        prev = (lidx, bidx)
        size = 1
        for d in shape:
            size *= d  # Python ints: no overflow
        total_values += size
        # An axis longer than the whole allowance is absurd even when another axis is 0
        # (numpy may size temporaries by such an axis).
        if total_values > max_weights or any(d > max_weights for d in shape):
            raise FormatError("%s: blob shape %s takes the file past the limit of %d values; "
                              "refusing to allocate (raise max_weights if this is intended)"
                              % (where, shape, max_weights))
        record_bytes = rec_end + 4 - pos
        if kind == KIND_RAW or (kind == KIND_QUANTIZED_RAW and h["version"][1] >= 2):
            if cur.end - cur.pos != 4 * size:
                raise FormatError("%s: raw blob of shape %s needs %d bytes, record holds %d"
                                  % (where, shape, 4 * size, cur.end - cur.pos))
            arr = cur.array("<f4", size, "raw values").astype(np.float32).reshape(shape)
            q = kind == KIND_QUANTIZED_RAW
            out.append(RawBlob(lay["name"], lay["type"], bidx, arr, quantized=q))
            infos.append(RecordInfo("quantized-raw", lay["name"], bidx, shape, record_bytes,
                                    nonzero=int(np.count_nonzero(arr))) if q else
                         RecordInfo("raw", lay["name"], bidx, shape, record_bytes))
        elif kind == KIND_QUANTIZED:
            out.append(None)
            infos.append(None)
            pending.append((len(out) - 1, _parse_quantized(cur, lay, bidx, shape, size, record_bytes,
                                                           h["version"][1])))
        elif kind == KIND_QUANTIZED_RAW:
            raise FormatError("%s: record kind 3 (quantized, stored raw) needs format 1.2, the file is %d.%d"
                              % (where, h["version"][0], h["version"][1]))
        else:
            raise FormatError("%s: unknown record kind %d" % (where, kind))
        if cur.pos != cur.end:
            raise FormatError("%s: %d unexplained bytes at the end of the record" % (where, cur.end - cur.pos))
        pos = rec_end + 4
    if pos != len(data):
        raise FormatError("%d trailing bytes after the last record" % (len(data) - pos))
    _decode_pending(pending, out, infos, CODERS[h.get("coder", DEFAULT_CODER)])
    return h, out, infos  # type: ignore[return-value]


def _open_record(data, pos: int, r: int, n_records: int, layers: List[dict], prev: Tuple[int, int]):
    """Frame record ``r`` at ``pos`` (length, CRC) and read its prefix and shape.

    Returns (cursor after the shape, kind, layer index, blob index, shape,
    offset of the record's CRC); the indices are checked against the header
    and must come after ``prev``, the previous record's (layer, blob).
    """
    where = "record %d" % r
    if pos + 4 > len(data):
        raise FormatError("truncated: %s of %d is missing (file ends at byte %d)" % (where, n_records, len(data)))
    blen, = _U32S.unpack(data[pos:pos + 4])
    if blen > len(data) - pos - 8:
        raise FormatError("truncated: %s declares %d bytes, only %d left" % (where, blen, max(0, len(data) - pos - 8)))
    rec_end = pos + 4 + blen
    crc, = _U32S.unpack(data[rec_end:rec_end + 4])
    if zlib.crc32(data[pos:rec_end]) & _U32 != crc:
        raise FormatError("%s: CRC mismatch (file corrupt)" % where)
    cur = _Cursor(data, pos + 4, rec_end, where)
    kind, ndim, bidx, lidx = cur.unpack(_REC_PREFIX, "record prefix")
    if lidx >= len(layers):
        raise FormatError("%s: layer index %d, but the header lists %d layers" % (where, lidx, len(layers)))
    lay = layers[lidx]
    cur.where = "%s (layer %r blob %d)" % (where, lay["name"], bidx)
    if bidx >= lay["blobs"]:
        raise FormatError("%s: the header gives this layer %d blobs" % (cur.where, lay["blobs"]))
    if (lidx, bidx) <= prev:
        raise FormatError("%s: records out of order or repeated" % cur.where)
    if ndim > MAX_NDIM:
        raise FormatError("%s: %d axes (limit %d)" % (cur.where, ndim, MAX_NDIM))
    shape = tuple(int(d) for d in cur.array("<u4", ndim, "shape"))
    return cur, kind, lidx, bidx, shape, rec_end


def _decode_pending(pending: List[Tuple[int, "_Pending"]], out: list, infos: list, coder: Coder) -> None:
    """Decode every stream of the parsed quantized records (one joint pass) into ``out``/``infos``.

    Compact length tables are decoded first, each on its own (``Coder.decode_small``: a table is
    one short block, which Huffman's lock-step decoder would walk one numpy step per symbol).
    """
    def lengths(part, what):
        table = part[1]
        return coder.decode_small(*table, what) if isinstance(table, tuple) else table

    jobs, names = [], []
    for _, p in pending:
        cl = lengths(p.code, "layer %r code-length table" % p.name)
        gl = lengths(p.gap, "layer %r gap-length table" % p.name) if p.gap else None
        if p.entries == 0 and (cl.any() or (gl is not None and gl.any())):
            raise FormatError("%s: no entries but nonzero code lengths" % p.where)
        if p.entries and cl[0] == 0 and p.fillers:
            raise FormatError("%s: %d fillers but code 0 has no Huffman code" % (p.where, p.fillers))
        jobs.append((p.code[0], cl, p.entries))
        names.append("layer %r code stream" % p.name)
        if p.gap:
            jobs.append((p.gap[0], gl, p.entries))
            names.append("layer %r gap stream" % p.name)
    decoded = iter(coder.decode(jobs, names))
    for slot, p in pending:
        ecodes = next(decoded)
        gaps = next(decoded) if p.gap else np.zeros(p.entries, np.uint16)
        codes, infos[slot] = _rebuild(p, ecodes, gaps)
        out[slot] = QuantizedBlob(p.name, p.type, p.blob, p.codebook, codes, p.wb, p.ib)


def _read_table(cur: _Cursor, n_sym: int, compact: bool, what: str):
    """A code-length table: the lengths (plain nibbles), or the decode job of a compact one (1.1)."""
    if not compact:
        return sparse_format.unpack_nibbles(cur.take((n_sym + 1) // 2, what), n_sym, strict=True)
    bits, = cur.unpack(_TABLE_BITS, what)
    meta = sparse_format.unpack_nibbles(cur.take(_META // 2, what), _META)
    payload = bytes(cur.take((bits + 7) // 8, what))
    return Stream(payload, bits, n_sym, np.zeros(0, np.int64)), meta, n_sym


def _parse_quantized(cur: _Cursor, lay: dict, bidx: int, shape, size: int, record_bytes: int,
                     minor: int) -> _Pending:
    where = cur.where
    wb, ib, reserved, n, fillers, bs, cbits, gbits = cur.unpack(_QUANT_FIXED, "quantized-record fields")
    c_compact = g_compact = False
    if minor >= 1:   # 1.1: compact-table flags in the high bits; index_bits 0 is a dense record
        c_compact, g_compact = bool(wb & _COMPACT), bool(ib & _COMPACT)
        wb, ib = wb & ~_COMPACT, ib & ~_COMPACT
    if not (bits_in_range(wb) and bits_in_range(ib, 0 if minor >= 1 else 1)):
        raise FormatError("%s: weight_bits %d / index_bits %d outside 1..%d" % (where, wb, ib, MAX_BITS))
    if reserved:
        raise FormatError("%s: reserved field is %d, must be 0" % (where, reserved))
    if n > size:
        raise FormatError("%s: %d entries for a blob of %d weights" % (where, n, size))
    if fillers > n:
        raise FormatError("%s: %d fillers but only %d entries" % (where, fillers, n))
    if not 1 <= bs <= MAX_BLOCK:
        raise FormatError("%s: block size %d outside 1..%d" % (where, bs, MAX_BLOCK))
    dense = ib == 0
    if dense and (gbits or g_compact):
        raise FormatError("%s: a dense record (index_bits 0) with a gap stream or gap table" % where)
    k, m = 1 << wb, 1 << ib
    n_off = max(0, -(-n // bs) - 1)
    streams = 1 if dense else 2
    table = lambda n_sym, compact: 2 + _META // 2 if compact else (n_sym + 1) // 2   # the least it takes
    payloads = (cbits + 7) // 8 + (gbits + 7) // 8
    need = 4 * k + 4 * streams * n_off + table(k, c_compact) + (0 if dense else table(m, g_compact)) + payloads
    if need > cur.end - cur.pos or (need < cur.end - cur.pos and not (c_compact or g_compact)):
        raise FormatError("%s: fields call for %d more bytes, the record holds %d (inconsistent lengths)"
                          % (where, need, cur.end - cur.pos))
    codebook = cur.array("<f4", k, "codebook").astype(np.float32)
    if codebook[0] != 0.0:
        raise FormatError("%s: codebook[0] is %r, must be the reserved 0.0" % (where, float(codebook[0])))
    c_off = cur.array("<u4", n_off, "code offsets").astype(np.int64)
    g_off = None if dense else cur.array("<u4", n_off, "gap offsets").astype(np.int64)
    tables_at = cur.pos
    cl = _read_table(cur, k, c_compact, "code lengths")
    gl = None if dense else _read_table(cur, m, g_compact, "gap lengths")
    table_bytes = cur.pos - tables_at
    if cur.end - cur.pos != payloads:
        raise FormatError("%s: the streams need %d more bytes, the record holds %d (inconsistent lengths)"
                          % (where, payloads, cur.end - cur.pos))
    cpay = bytes(cur.take((cbits + 7) // 8, "code payload"))
    gpay = bytes(cur.take((gbits + 7) // 8, "gap payload"))
    info = RecordInfo("quantized", lay["name"], bidx, shape, record_bytes, n, fillers, n - fillers, wb, ib,
                      32 * k, cbits, gbits, 8 * table_bytes, 32 * streams * n_off)
    return _Pending(lay["name"], lay["type"], bidx, shape, codebook, wb, ib, n, fillers,
                    (Stream(cpay, cbits, bs, c_off), cl),
                    None if dense else (Stream(gpay, gbits, bs, g_off), gl), info, where)


def _rebuild(p: _Pending, ecodes: np.ndarray, gaps: np.ndarray) -> Tuple[np.ndarray, RecordInfo]:
    """Entries -> code array of the blob's shape, checking fillers against the header fields."""
    where = "layer %r blob %d" % (p.name, p.blob)
    is_fill = ecodes == 0
    n_fill = int(np.count_nonzero(is_fill))
    if n_fill != p.fillers:
        raise FormatError("%s: record says %d fillers, the stream holds %d" % (where, p.fillers, n_fill))
    if n_fill and (gaps[is_fill] != sparse_format.max_gap(p.ib)).any():
        raise FormatError("%s: a filler entry has a gap other than %d" % (where, sparse_format.max_gap(p.ib)))
    size = int(np.prod(p.shape, dtype=np.int64))
    dtype = np.uint8 if p.wb <= 8 else np.uint16
    try:
        codes = sparse_format.from_entries(gaps, ecodes, size, dtype=dtype)
    except FormatError as e:
        raise FormatError("%s: %s" % (where, e))
    info = p.info._replace(code_counts=np.bincount(ecodes, minlength=1 << p.wb),
                           gap_counts=np.bincount(gaps, minlength=1 << p.ib))
    return codes.reshape(p.shape), info
