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
import tempfile
from typing import Dict, List, NamedTuple

import numpy as np

from .errors import InputError


def caffe_pb2():
    try:
        from caffe.proto import caffe_pb2 as pb
    except ImportError as e:  # pragma: no cover - only outside the image
        raise InputError("pycaffe is not importable here (%s); run through ./dc" % e)
    return pb


class LayerParams(NamedTuple):
    type: str
    blobs: List[np.ndarray]


Params = Dict[str, LayerParams]  # ordered as in the caffemodel


def _blob_to_array(blob) -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # legacy 4-d blobs
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if len(blob.data):
        arr = np.asarray(blob.data, dtype=np.float32)
    elif len(blob.double_data):
        arr = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        arr = np.zeros(int(np.prod(shape)), dtype=np.float32)
    if arr.size != int(np.prod(shape)):
        raise InputError("blob holds %d values but its shape %s needs %d" % (arr.size, shape, int(np.prod(shape))))
    return arr.reshape(shape)


def parse_params(data: bytes, what: str = "caffemodel") -> Params:
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
        out[layer.name] = LayerParams(ltype, [_blob_to_array(b) for b in layer.blobs])
    if not out and data:
        raise InputError("%s has no layers with parameters" % what)
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


def params_to_bytes(params: Params, name: str = "caffe-dc") -> bytes:
    pb = caffe_pb2()
    net = pb.NetParameter()
    net.name = name
    for lname, lp in params.items():
        layer = net.layer.add()
        layer.name = lname
        layer.type = lp.type
        for arr in lp.blobs:
            b = layer.blobs.add()
            b.shape.dim.extend(int(d) for d in arr.shape)
            # extend() from a float32 ndarray is bit-exact and much faster than per-item appends
            b.data.extend(np.ascontiguousarray(arr, dtype=np.float32).ravel().tolist())
    return net.SerializeToString()


def atomic_write(path: str, data: bytes) -> None:
    """Write via a temp file in the same folder, then rename: never a half file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_params(params: Params, path: str, name: str = "caffe-dc") -> None:
    atomic_write(path, params_to_bytes(params, name))


def load_net_proto(path: str):
    """A prototxt parsed into caffe_pb2.NetParameter, with a clear error if it does not parse."""
    from google.protobuf import text_format

    pb = caffe_pb2()
    if not os.path.isfile(path):
        raise InputError("no such prototxt: %s" % path)
    net = pb.NetParameter()
    with open(path) as f:
        text = f.read()
    try:
        text_format.Merge(text, net)
    except text_format.ParseError as e:
        raise InputError("%s does not parse as a Caffe net: %s" % (path, e))
    return net


def save_net_proto(net, path: str) -> None:
    from google.protobuf import text_format

    atomic_write(path, text_format.MessageToString(net).encode())


def load_solver_proto(path: str):
    from google.protobuf import text_format

    pb = caffe_pb2()
    if not os.path.isfile(path):
        raise InputError("no such solver prototxt: %s" % path)
    s = pb.SolverParameter()
    try:
        with open(path) as f:
            text_format.Merge(f.read(), s)
    except text_format.ParseError as e:
        raise InputError("%s does not parse as a Caffe solver: %s" % (path, e))
    return s
