"""Caffemodel bytes <-> Params, on protobuf's wire format directly (no pycaffe, no protobuf).

Caffe matches trained blobs to layers by name only, so a caffemodel we
write needs nothing but names, types and blobs: ``caffe.Net(prototxt,
weights)``, ``caffe test`` and OpenCV's ``readNetFromCaffe`` load it like any
other. The reader takes what Caffe writes and what it still loads:
NetParameter with V2 ``layer`` (field 100) or legacy V1 ``layers`` (field 2,
whose enum types become V2 type names), blobs with a ``shape`` or legacy
num/channels/height/width, float or double data, packed or not. Float data
is read straight from the packed field into numpy, without a Python float
per weight.

A declared shape is checked against the file before anything is allocated
(``_Budget``): a 33-byte file cannot ask for terabytes.
"""
from __future__ import annotations

import collections
from typing import Optional

import numpy as np

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import atomic_write, require_file
from caffe_dc.base.limits import max_caffemodel_bytes
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.codec.caffe_proto import V1_TYPES


class _Budget:
    """What a caffemodel's declared shapes may make us allocate: never more values than the file
    has bytes for (a float32 takes 4), and never more bytes than the configured cap, checked
    before each allocation."""

    def __init__(self, file_bytes: int, cap: int, what: str):
        self.file_bytes, self.cap, self.used, self.what = file_bytes, cap, 0, what

    def take(self, shape, held: int) -> int:
        n = 1
        for d in shape:  # Python ints: a product of huge dims must not wrap around
            if d < 0:
                raise InputError("%s: a blob has a negative dimension in its shape %s" % (self.what, shape))
            n *= d
        if n != held:
            if held or 4 * n > self.file_bytes:
                raise InputError("%s: a blob holds %d values but its shape %s needs %d" % (self.what, held, shape, n))
        if 4 * (self.used + n) > self.cap:
            raise InputError("%s: the blobs' shapes declare more than %d bytes (CAFFE_DC_MAX_CAFFEMODEL_BYTES)"
                             % (self.what, self.cap))
        self.used += n
        return n


def varint(buf, i: int):
    """(value, next offset) of the varint at ``buf[i]``; ValueError if it is cut off or too long."""
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf, start: int, end: int):
    """(field number, wire type, value) for each field of the message in buf[start:end]: an int for
    a varint, a (lo, hi) span of the payload otherwise."""
    i = start
    while i < end:
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
            yield num, wt, v
        elif wt in (1, 2, 5):
            if wt == 2:
                n, i = varint(buf, i)
            else:
                n = 8 if wt == 1 else 4
            if i + n > end:
                raise ValueError("field %d runs past its message" % num)
            yield num, wt, (i, i + n)
            i += n
        else:
            raise ValueError("unsupported wire type %d" % wt)
    if i != end:
        raise ValueError("message overruns its length")


def _signed(v: int) -> int:
    """An int32/int64 read as a varint: negatives come as 64-bit two's complement."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(buf, wt, v) -> list:
    """A repeated integer field's values, packed (one span) or not (one varint)."""
    if wt == 0:
        return [_signed(v)]
    if wt != 2:
        raise ValueError("an integer field has wire type %d" % wt)
    out, j = [], v[0]
    while j < v[1]:
        d, j = varint(buf, j)
        out.append(_signed(d))
    return out


def _reals(buf, wt, v, size: int):
    """A repeated float (size 4) or double (size 8) field's chunk: packed, or one unpacked value."""
    if wt not in (2, 1 if size == 8 else 5):
        raise ValueError("a %s field has wire type %d" % ("double" if size == 8 else "float", wt))
    if (v[1] - v[0]) % size:
        raise ValueError("a packed field's length is not a multiple of %d" % size)
    return np.frombuffer(buf, dtype="<f%d" % size, count=(v[1] - v[0]) // size, offset=v[0])


def _blob(buf, lo, hi, budget: _Budget) -> np.ndarray:
    shape, legacy = None, [0, 0, 0, 0]
    data, double = [], []
    for num, wt, v in fields(buf, lo, hi):
        if num == 7 and wt == 2:           # BlobShape shape
            shape = []
            for dn, dwt, dv in fields(buf, *v):
                if dn == 1:
                    shape += _ints(buf, dwt, dv)
        elif num == 5:                      # float data
            data.append(_reals(buf, wt, v, 4))
        elif num == 8:                      # double data
            double.append(_reals(buf, wt, v, 8))
        elif num in (1, 2, 3, 4) and wt == 0:   # legacy num, channels, height, width
            legacy[num - 1] = _signed(v)
    shape = tuple(legacy if shape is None else shape)
    held = sum(d.size for d in data) or sum(d.size for d in double)
    n = budget.take(shape, held)
    if data:
        arr = np.concatenate(data).astype(np.float32)   # a copy: never a view into the file's bytes
    elif double:
        arr = np.concatenate(double).astype(np.float32)
    else:
        arr = np.zeros(n, np.float32)
    return arr.reshape(shape)


def _layer(buf, lo, hi, v1: bool, budget: _Budget):
    """(name, type, blobs) of a V2 LayerParameter (name 1, type 2, blobs 7) or a V1LayerParameter
    (name 4, type 5 as an enum, blobs 6)."""
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    name, ltype, blobs = "", "", []
    for num, wt, v in fields(buf, lo, hi):
        if num == name_f and wt == 2:
            name = bytes(buf[v[0]:v[1]]).decode("utf-8")
        elif num == type_f:
            if v1 and wt == 0:
                ltype = V1_TYPES.get(v, ("", str(v)))[1]
            elif not v1 and wt == 2:
                ltype = bytes(buf[v[0]:v[1]]).decode("utf-8")
        elif num == blobs_f and wt == 2:
            blobs.append(_blob(buf, *v, budget))
    return name, ltype, blobs


def _parse(data: bytes, budget: _Budget) -> Params:
    buf = memoryview(data)
    v2, v1 = [], []
    for num, wt, v in fields(buf, 0, len(buf)):
        if num == 100 and wt == 2:
            v2.append(v)
        elif num == 2 and wt == 2:
            v1.append(v)
    out: Params = collections.OrderedDict()
    for span, legacy in [(s, False) for s in v2] or [(s, True) for s in v1]:   # V2 wins, as in Caffe
        name, ltype, blobs = _layer(buf, *span, legacy, budget)
        if blobs:
            out[name] = LayerParams(ltype, blobs)
    return out


def parse_params(data: bytes, what: str = "caffemodel", max_bytes: Optional[int] = None) -> Params:
    """Parse caffemodel bytes into {layer name: LayerParams} for every layer with blobs.
    Declared shapes may allocate at most ``max_bytes`` in all (default: ``limits.max_caffemodel_bytes``)."""
    cap = max_caffemodel_bytes() if max_bytes is None else max_bytes
    try:
        out = _parse(data, _Budget(len(data), cap, what))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError("%s is not a valid caffemodel (%s)" % (what, e))
    if not out and data:
        raise InputError("%s has no layers with parameters" % what)
    return out


def load_params(path: str) -> Params:
    """Blobs of every parameterised layer in a caffemodel, by layer name."""
    require_file(path, "caffemodel")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise InputError("%s is empty" % path)
    return parse_params(data, path)


def enc_varint(v: int) -> bytes:
    if v < 0:   # as protobuf writes a negative int32/int64: 64-bit two's complement (and the loop ends)
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(num: int, wt: int = 2) -> bytes:
    return enc_varint((num << 3) | wt)


def field(num: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, a message or a packed array)."""
    return key(num) + enc_varint(len(payload)) + payload


def params_to_bytes(params: Params, name: str = "caffe-dc") -> bytes:
    """Serialise as a NetParameter: its name, then per layer its name, type and blobs, each blob its
    shape (packed dims) and its data (packed little-endian float32, field 5). These are the bytes
    caffe-dc always wrote through pycaffe's protobuf for the same model (tests/test_caffemodel_io.py)."""
    parts = [field(1, name.encode("utf-8"))]                                # NetParameter.name
    for lname, lp in params.items():
        layer = [field(1, lname.encode("utf-8")), field(2, lp.type.encode("utf-8"))]
        for arr in lp.blobs:
            dims = b"".join(enc_varint(int(d)) for d in arr.shape)
            shape = field(1, dims) if dims else b""                          # BlobShape.dim, packed
            payload = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            layer.append(field(7, field(7, shape) + field(5, payload)))    # LayerParameter.blobs
        parts.append(field(100, b"".join(layer)))                           # NetParameter.layer
    return b"".join(parts)


def save_params(params: Params, path: str, name: str = "caffe-dc") -> None:
    atomic_write(path, params_to_bytes(params, name))
