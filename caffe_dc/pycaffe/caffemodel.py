"""Prototxts and solver files through pycaffe's own protobuf; caffemodels through ``codec.caffemodel``.

The training side edits nets and solvers as ``caffe_pb2`` messages (every
field of Caffe's proto, written back whole), so it reads them here. Caffemodel
bytes are read and written by ``codec.caffemodel``, which needs no Caffe and is
re-exported here for the modules that import it from this one. The codec
commands read prototxts through ``codec.caffe_proto`` instead (no pycaffe).
"""
from __future__ import annotations

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.params import LayerParams, Params  # noqa: F401 (re-exported)
from caffe_dc.codec.caffe_proto import read_text as _read_text
from caffe_dc.codec.caffemodel import enc_varint, field, fields, key
from caffe_dc.codec.caffemodel import load_params, params_to_bytes, parse_params, save_params  # noqa: F401

_key, _enc_varint, _field = key, enc_varint, field   # the names tests/test_bad_input.py builds files with


def caffe_pb2():
    try:
        from caffe.proto import caffe_pb2 as pb
    except ImportError as e:  # pragma: no cover - only outside the image
        raise InputError("pycaffe is not importable here (%s); run through ./dc" % e)
    return pb


def relink_solverstate(data: bytes, learned_net: str) -> bytes:
    """A SolverState with its ``learned_net`` (field 2) pointing at ``learned_net``.

    Caffe's solverstate names the caffemodel it was written beside; moving a snapshot into place
    (or a whole run folder) has to update that path. Only the top-level fields are walked, so the
    history payload is copied as raw bytes, however large. Raises ValueError on a malformed file."""
    parts = []
    for num, wt, val in fields(data, 0, len(data)):
        if num == 2:
            continue
        if wt != 2 and wt != 0:
            raise ValueError("unexpected field %d in a solverstate" % num)
        parts.append(key(num, wt) + (enc_varint(val) if wt == 0 else enc_varint(val[1] - val[0]) + data[val[0]:val[1]]))
    return field(2, learned_net.encode("utf-8")) + b"".join(parts)


def _parse_text(path: str, message, kind: str, what: str):
    """Parse a text-format file into ``message``: one clear error for a missing, binary or malformed file."""
    from google.protobuf import text_format

    text = _read_text(path, kind)
    try:
        text_format.Merge(text, message)
    except (text_format.ParseError, ValueError) as e:
        raise InputError("%s does not parse as a Caffe %s: %s" % (path, what, " ".join(str(e).split())))
    return message


def load_net_proto(path: str):
    """A prototxt parsed into caffe_pb2.NetParameter, with a clear error if it does not parse."""
    return _parse_text(path, caffe_pb2().NetParameter(), "prototxt", "net")


def save_net_proto(net, path: str) -> None:
    from google.protobuf import text_format

    atomic_write(path, text_format.MessageToString(net).encode())


def save_solver_proto(solver_param, path: str) -> None:
    from google.protobuf import text_format

    atomic_write(path, text_format.MessageToString(solver_param).encode())


def load_solver_proto(path: str):
    return _parse_text(path, caffe_pb2().SolverParameter(), "solver prototxt", "solver")
