"""MNIST-format IDX files (raw or gzip) to numpy, with every defect named.

The IDX header is two zero bytes, a type byte, a dimension count, then one
big-endian uint32 per dimension. MNIST and Fashion-MNIST use type 0x08
(unsigned byte) only, so that is all we accept: anything else is far more
likely a wrong or damaged file than a new data set.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from caffe_dc.base.errors import InputError

UBYTE = 0x08
_MAX_ELEMENTS = 1 << 31  # refuse headers that would have us allocate more than 2 GB


def read_idx_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise InputError("no such IDX file: %s" % path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError("%s: corrupt or truncated gzip data (%s)" % (path, e))
    return raw


def parse_idx(data: bytes, name: str = "IDX data", ndim: int | None = None) -> np.ndarray:
    """Decode IDX bytes to a uint8 array, checking magic, dimensions and body length."""
    if len(data) < 4:
        raise InputError("%s: too short for an IDX header (%d bytes)" % (name, len(data)))
    zero, dtype, nd = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise InputError("%s: bad magic number 0x%08x (not an IDX file)" % (name, struct.unpack(">I", data[:4])[0]))
    if dtype != UBYTE:
        raise InputError("%s: IDX element type 0x%02x is not unsigned byte (0x08)" % (name, dtype))
    if ndim is not None and nd != ndim:
        raise InputError("%s: expected %d dimensions, found %d" % (name, ndim, nd))
    if nd == 0:
        raise InputError("%s: IDX file with zero dimensions" % name)
    header = 4 + 4 * nd
    if len(data) < header:
        raise InputError("%s: truncated header" % name)
    dims = struct.unpack(">%dI" % nd, data[4:header])
    count = 1
    for d in dims:
        count *= d
    if count > _MAX_ELEMENTS:
        raise InputError("%s: dimensions %s are implausibly large" % (name, dims))
    body = len(data) - header
    if body < count:
        raise InputError("%s: truncated body: dimensions %s need %d bytes, file has %d" % (name, dims, count, body))
    if body > count:
        raise InputError("%s: %d unexpected bytes after the body (dimensions %s)" % (name, body - count, dims))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_idx(path: str, ndim: int | None = None) -> np.ndarray:
    return parse_idx(read_idx_bytes(path), path, ndim)


def load_split(images_path: str, labels_path: str) -> tuple:
    """Images (N, H, W) and labels (N,) of one split, checked against each other."""
    images = load_idx(images_path, ndim=3)
    labels = load_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise InputError("%s has %d images but %s has %d labels" % (images_path, images.shape[0], labels_path, labels.shape[0]))
    if labels.size and labels.max() > 9:
        raise InputError("%s: label %d outside 0..9" % (labels_path, int(labels.max())))
    return images, labels
