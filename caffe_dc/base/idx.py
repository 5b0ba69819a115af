"""MNIST-format IDX files (raw or gzip) to numpy, with every defect named.

The IDX header is two zero bytes, a type byte, a dimension count, then one
big-endian uint32 per dimension. MNIST and Fashion-MNIST use type 0x08
(unsigned byte) only, so that is all we accept: anything else is far more
likely a wrong or damaged file than a new data set.
"""
from __future__ import annotations

import gzip
import io
import os
import struct
import zlib

import numpy as np

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import require_file

UBYTE = 0x08
_MAX_ELEMENTS = 1 << 31  # refuse headers that would have us allocate more than 2 GB


# The files of an MNIST-format set, by split: each name may also end in .gz, or spell "-idx" as ".idx".
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
STEMS = tuple(stem for pair in SPLITS.values() for stem in pair)


def gunzip(raw: bytes, name: str, limit: int | None = None) -> bytes:
    """``raw`` decompressed, with a damaged stream, or one longer than ``limit`` bytes, named as the user's error."""
    try:
        if limit is None:
            return gzip.decompress(raw)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError("%s: corrupt or truncated gzip data (%s)" % (name, e))
    if len(out) > limit:
        raise InputError("%s: more than %d bytes uncompressed, far more than expected" % (name, limit))
    return out


def idx_payload(raw: bytes, name: str) -> bytes:
    """The IDX bytes of a file's contents, gzip or not."""
    return gunzip(raw, name) if raw[:2] == b"\x1f\x8b" else raw


def read_idx_bytes(path: str) -> bytes:
    require_file(path, "IDX file")
    with open(path, "rb") as f:
        return idx_payload(f.read(), path)


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


def encode_idx(arr: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array: what ``parse_idx`` reads back (MNIST's own files are exactly this)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8 or arr.ndim == 0:
        raise ValueError("IDX holds uint8 arrays of at least one dimension, not %s %s" % (arr.dtype, arr.shape))
    return struct.pack(">HBB", 0, UBYTE, arr.ndim) + struct.pack(">%dI" % arr.ndim, *arr.shape) + arr.tobytes()


def load_idx(path: str, ndim: int | None = None) -> np.ndarray:
    return parse_idx(read_idx_bytes(path), path, ndim)


def split_arrays(images_data: bytes, labels_data: bytes, images_name: str, labels_name: str) -> tuple:
    """Images (N, H, W) and labels (N,) of one split from its two files' bytes, checked against each other."""
    images = parse_idx(images_data, images_name, ndim=3)
    labels = parse_idx(labels_data, labels_name, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise InputError("%s has %d images but %s has %d labels" % (images_name, images.shape[0], labels_name, labels.shape[0]))
    if labels.size and labels.max() > 9:
        raise InputError("%s: label %d outside 0..9" % (labels_name, int(labels.max())))
    return images, labels


def labels_beside(images_path: str) -> str | None:
    """The labels file an images file's name points to (``images`` made ``labels``, ``idx3`` made ``idx1``, in
    the same folder), or None when the name holds no ``images``; whether it exists is the caller's question."""
    base = os.path.basename(images_path)
    if "images" not in base:
        return None
    return os.path.join(os.path.dirname(images_path), base.replace("images", "labels").replace("idx3", "idx1"))


def load_split(images_path: str, labels_path: str) -> tuple:
    """Images (N, H, W) and labels (N,) of one split's two files."""
    return split_arrays(read_idx_bytes(images_path), read_idx_bytes(labels_path), images_path, labels_path)
