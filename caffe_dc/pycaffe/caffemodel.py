"""Read and write caffemodels and prototxts with pycaffe's own protobuf.

Caffe matches trained blobs to layers by name only, so a caffemodel we
write needs nothing but names, types and blobs: ``caffe.Net(prototxt,
weights)`` and ``caffe test`` load it like any other. Going through
``caffe_pb2`` rather than ``caffe.Net`` keeps this fast and free of GLOG
noise, and lets the codec run on nets far too large to instantiate.
"""
from __future__ import annotations

import collections
import os
from typing import Optional

import numpy as np

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.limits import max_caffemodel_bytes
from caffe_dc.base.params import LayerParams, Params


def caffe_pb2():
    try:
        from caffe.proto import caffe_pb2 as pb
    except ImportError as e:  # pragma: no cover - only outside the image
        raise InputError("pycaffe is not importable here (%s); run through ./dc" % e)
    return pb




class _Budget:
    """What a caffemodel's declared shapes may make us allocate: never more values than the file
    has bytes for (a float32 takes 4), and never more bytes than the configured cap, checked
    before each allocation, so a 33-byte file cannot ask for terabytes."""

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


def _blob_to_array(blob, budget: "_Budget") -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # legacy 4-d blobs
        shape = (blob.num, blob.channels, blob.height, blob.width)
    held = len(blob.data) or len(blob.double_data)
    n = budget.take(shape, held)
    if len(blob.data):
        arr = np.asarray(blob.data, dtype=np.float32)
    elif len(blob.double_data):
        arr = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        arr = np.zeros(n, dtype=np.float32)
    return arr.reshape(shape)


def _varint(buf, i: int):
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


def _fields(buf, start: int, end: int):
    """(field number, wire type, value or (lo, hi) span) for each field of a message in buf[start:end]."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
            yield num, wt, v
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > end:
                raise ValueError("field %d runs past its message" % num)
            yield num, wt, (i, i + n)
            i += n
        elif wt == 5:
            i += 4
            yield num, wt, None
        elif wt == 1:
            i += 8
            yield num, wt, None
        else:
            raise ValueError("unsupported wire type %d" % wt)
    if i != end:
        raise ValueError("message overruns its length")


class _Slow(Exception):
    """Something the fast reader does not handle (V1 layers, double data, legacy dims): use protobuf."""


def _fast_blob(buf, lo, hi, budget: "_Budget") -> np.ndarray:
    shape, data = None, None
    for num, wt, v in _fields(buf, lo, hi):
        if num == 7 and wt == 2:          # BlobShape shape
            dims = []
            for dn, dwt, dv in _fields(buf, *v):
                if dn != 1:
                    continue
                if dwt == 2:              # packed int64
                    j, e = dv
                    while j < e:
                        d, j = _varint(buf, j)
                        dims.append(d)
                else:
                    dims.append(dv)
            shape = tuple(dims)
        elif num == 5 and wt == 2:        # packed float data
            if data is not None:
                raise _Slow()
            data = np.frombuffer(buf, dtype="<f4", count=(v[1] - v[0]) // 4, offset=v[0])
        elif num in (5, 8, 9, 1, 2, 3, 4):  # unpacked floats, double data/diff, legacy 4-d dims
            raise _Slow()
    if shape is None:
        raise _Slow()
    n = budget.take(shape, 0 if data is None else data.size)
    if data is None:
        data = np.zeros(n, np.float32)
    return data.astype(np.float32).reshape(shape)  # a copy: never a view into the file's bytes


def _fast_parse(data: bytes, budget: "_Budget") -> Params:
    buf = memoryview(data)
    out: Params = collections.OrderedDict()
    for num, wt, v in _fields(buf, 0, len(buf)):
        if num == 2 and wt == 2:          # V1 "layers": leave to protobuf
            raise _Slow()
        if num != 100 or wt != 2:
            continue
        name, ltype, blobs = "", "", []
        for ln, lwt, lv in _fields(buf, *v):
            if ln == 1 and lwt == 2:
                name = bytes(buf[lv[0]:lv[1]]).decode("utf-8")
            elif ln == 2 and lwt == 2:
                ltype = bytes(buf[lv[0]:lv[1]]).decode("utf-8")
            elif ln == 7 and lwt == 2:
                blobs.append(_fast_blob(buf, *lv, budget))
        if blobs:
            out[name] = LayerParams(ltype, blobs)
    return out


def parse_params(data: bytes, what: str = "caffemodel", max_bytes: Optional[int] = None) -> Params:
    """Parse caffemodel bytes. Float data is read straight from the packed field (fast for big nets).
    Declared shapes may allocate at most ``max_bytes`` in all (default: ``limits.max_caffemodel_bytes``)."""
    cap = max_caffemodel_bytes() if max_bytes is None else max_bytes
    try:
        out = _fast_parse(data, _Budget(len(data), cap, what))
    except _Slow:
        out = _slow_parse(data, what, _Budget(len(data), cap, what))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError("%s is not a valid caffemodel (%s)" % (what, e))
    if not out and data:
        raise InputError("%s has no layers with parameters" % what)
    return out


def _slow_parse(data: bytes, what: str, budget: "_Budget") -> Params:
    pb = caffe_pb2()
    net = pb.NetParameter()
    try:
        net.ParseFromString(data)
    except Exception as e:
        raise InputError("%s is not a valid caffemodel (%s)" % (what, e))
    layers = net.layer if len(net.layer) else net.layers  # V2, else V1
    out: Params = collections.OrderedDict()
    for layer in layers:
        if not len(layer.blobs):
            continue
        ltype = layer.type if isinstance(layer.type, str) else str(layer.type)
        out[layer.name] = LayerParams(ltype, [_blob_to_array(b, budget) for b in layer.blobs])
    return out


def load_params(path: str) -> Params:
    """Blobs of every parameterised layer in a caffemodel, by layer name."""
    if not os.path.isfile(path):
        raise InputError("no such caffemodel: %s" % path)
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise InputError("%s is empty" % path)
    return parse_params(data, path)


def _key(num: int, wt: int = 2) -> bytes:
    return _enc_varint((num << 3) | wt)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _key(num) + _enc_varint(len(payload)) + payload


def params_to_bytes(params: Params, name: str = "caffe-dc") -> bytes:
    """Serialise as a NetParameter. Protobuf builds the small messages; the float payloads go in
    as packed little-endian bytes (BlobProto.data, field 5), which is what protobuf itself would
    write, without a Python float per weight."""
    pb = caffe_pb2()
    parts = [pb.NetParameter(name=name).SerializeToString()]
    for lname, lp in params.items():
        layer = [pb.LayerParameter(name=lname, type=lp.type).SerializeToString()]
        for arr in lp.blobs:
            shape = pb.BlobShape(dim=[int(d) for d in arr.shape]).SerializeToString()
            payload = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            layer.append(_field(7, _field(7, shape) + _field(5, payload)))   # LayerParameter.blobs
        parts.append(_field(100, b"".join(layer)))                          # NetParameter.layer
    return b"".join(parts)




def relink_solverstate(data: bytes, learned_net: str) -> bytes:
    """A SolverState with its ``learned_net`` (field 2) pointing at ``learned_net``.

    Caffe's solverstate names the caffemodel it was written beside; moving a snapshot into place
    (or a whole run folder) has to update that path. Only the top-level fields are walked, so the
    history payload is copied as raw bytes, however large. Raises ValueError on a malformed file."""
    parts = []
    for num, wt, val in _fields(data, 0, len(data)):
        if num == 2:
            continue
        if wt != 2 and wt != 0:
            raise ValueError("unexpected field %d in a solverstate" % num)
        parts.append(_key(num, wt) + (_enc_varint(val) if wt == 0 else _enc_varint(val[1] - val[0]) + data[val[0]:val[1]]))
    return _field(2, learned_net.encode("utf-8")) + b"".join(parts)


def save_params(params: Params, path: str, name: str = "caffe-dc") -> None:
    atomic_write(path, params_to_bytes(params, name))


def _parse_text(path: str, message, kind: str, what: str):
    """Parse a text-format file into ``message``: one clear error for a missing, binary or malformed file."""
    from google.protobuf import text_format

    if not os.path.isfile(path):
        raise InputError("no such %s: %s" % (kind, path))
    text = _read_text(path, kind)
    try:
        text_format.Merge(text, message)
    except (text_format.ParseError, ValueError) as e:
        raise InputError("%s does not parse as a Caffe %s: %s" % (path, what, " ".join(str(e).split())))
    return message


def load_net_proto(path: str):
    """A prototxt parsed into caffe_pb2.NetParameter, with a clear error if it does not parse."""
    return _parse_text(path, caffe_pb2().NetParameter(), "prototxt", "net")


def _read_text(path: str, what: str) -> str:
    """A text file's contents; a binary file (a caffemodel given for a prototxt) is refused by name."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        if b"\0" in data:
            raise UnicodeError
        return data.decode("utf-8")
    except UnicodeError:
        raise InputError("%s is not a text %s (it holds binary data or is not UTF-8)" % (path, what))


def save_net_proto(net, path: str) -> None:
    from google.protobuf import text_format

    atomic_write(path, text_format.MessageToString(net).encode())


def save_solver_proto(solver_param, path: str) -> None:
    from google.protobuf import text_format

    atomic_write(path, text_format.MessageToString(solver_param).encode())


def load_solver_proto(path: str):
    return _parse_text(path, caffe_pb2().SolverParameter(), "solver prototxt", "solver")
