"""MNIST-format data sets to Caffe LMDBs.

The embedded default is Fashion-MNIST as Debian's ``dataset-fashion-mnist``
ships it. Real MNIST comes from IDX files the user supplies (``--idx``) or,
where a network exists, a download. Either way the result is a pair of LMDBs
of ``caffe_pb2.Datum`` records, the same as Caffe's ``convert_mnist_data``
writes, so the nets read them through an ordinary ``Data`` layer.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import NamedTuple, Optional

import numpy as np

from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import caffe_pb2
from caffe_dc.base.errors import InputError
from caffe_dc.pycaffe.idx import load_split

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Mirrors tried in order; CAFFE_DC_MNIST_URL overrides them (tests point it at loopback).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class DataInfo(NamedTuple):
    name: str
    train_lmdb: str
    test_lmdb: str
    n_train: int
    n_test: int
    # Net input overrides that travel with the data (small smoke-test images, small batches).
    batch: Optional[int] = None
    test_batch: Optional[int] = None
    crop: Optional[int] = None


def lmdb_entries(path: str) -> int:
    import lmdb

    if not os.path.isdir(path):
        raise InputError("no such LMDB: %s" % path)
    try:
        env = lmdb.open(path, readonly=True, lock=False)
    except lmdb.Error as e:
        raise InputError("%s is not a readable LMDB (%s)" % (path, e))
    n = int(env.stat()["entries"])
    env.close()
    if n == 0:
        raise InputError("LMDB %s is empty" % path)
    return n


def imagenet(train_lmdb: str, val_lmdb: str, batch: Optional[int] = None, test_batch: Optional[int] = None,
             crop: Optional[int] = None) -> DataInfo:
    """ImageNet-style LMDBs the user made with Caffe's convert_imageset (3x256x256 Datum records)."""
    return DataInfo("imagenet", os.path.abspath(train_lmdb), os.path.abspath(val_lmdb), lmdb_entries(train_lmdb),
                    lmdb_entries(val_lmdb), batch, test_batch, crop)


def find_idx(folder: str, stem: str) -> str:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, cand)
        if os.path.isfile(p):
            return p
    raise InputError("%s: no %s or %s.gz" % (folder, stem, stem))


def download_mnist(dest: str, quiet: bool = False) -> str:
    """Fetch the four MNIST IDX files into dest; a clear error when offline."""
    os.makedirs(dest, exist_ok=True)
    override = os.environ.get("CAFFE_DC_MNIST_URL")
    mirrors = (override,) if override else MNIST_MIRRORS
    for stems in SPLITS.values():
        for stem in stems:
            target = os.path.join(dest, stem + ".gz")
            if os.path.isfile(target):
                continue
            errors = []
            for base in mirrors:
                try:
                    with urllib.request.urlopen(base + stem + ".gz", timeout=20) as r:
                        atomic_write(target, r.read())
                    if not quiet:
                        print("downloaded %s" % (stem + ".gz"))
                    break
                except (urllib.error.URLError, OSError, ValueError) as e:
                    errors.append("%s: %s" % (base, getattr(e, "reason", e)))
            else:
                raise InputError(
                    "cannot download MNIST (%s). Without a network, get the four files "
                    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                    "t10k-labels-idx1-ubyte.gz) elsewhere and pass their folder with --idx DIR "
                    "(through ./dc: CAFFE_DC_DATA=DIR ./dc data --idx /data)" % "; ".join(errors)
                )
    return dest


def _write_lmdb(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    import lmdb

    pb = caffe_pb2()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", dir=parent)
    try:
        n, h, w = images.shape
        env = lmdb.open(tmp, map_size=max(1 << 26, int(n * (h * w + 64) * 2)), subdir=True, lock=False)
        datum = pb.Datum()
        datum.channels, datum.height, datum.width = 1, h, w
        with env.begin(write=True) as txn:
            for i in range(n):
                datum.data = images[i].tobytes()
                datum.label = int(labels[i])
                txn.put(b"%08d" % i, datum.SerializeToString())
        env.close()
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_lmdb(path: str):
    """Images (N, 1, H, W) uint8 and labels (N,) back from an LMDB, for checks and tests."""
    import lmdb

    pb = caffe_pb2()
    if not os.path.isdir(path):
        raise InputError("no such LMDB: %s" % path)
    env = lmdb.open(path, readonly=True, lock=False)
    images, labels = [], []
    datum = pb.Datum()
    with env.begin() as txn:
        for _, v in txn.cursor():
            datum.ParseFromString(v)
            images.append(np.frombuffer(datum.data, dtype=np.uint8).reshape(datum.channels, datum.height, datum.width))
            labels.append(datum.label)
    env.close()
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _fingerprint(paths) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(("%s:%d:%d;" % (os.path.basename(p), st.st_size, int(st.st_mtime))).encode())
    return h.hexdigest()


def prepare(name: str | None = None, idx_dir: str | None = None, download: str | None = None,
            out_root: str = "runs/data", quiet: bool = False, limit: int | None = None) -> DataInfo:
    """Make (or reuse) train/test LMDBs for a data set and return where they are.

    ``name`` defaults to "mnist" for files given with ``idx_dir``, else the
    embedded "fashion-mnist". ``limit`` keeps only the first N records of
    each split, for fast tests.
    """
    if name is None:
        name = "mnist" if idx_dir else "fashion-mnist"
    if download:
        if download != "mnist":
            raise InputError("--download knows only 'mnist', not %r" % download)
        name = "mnist"
        idx_dir = download_mnist(os.path.join(out_root, "mnist-idx"), quiet)
    elif idx_dir is None:
        if name != "fashion-mnist":
            raise InputError("data set %r needs its IDX files: pass --idx DIR" % name)
        idx_dir = FASHION_MNIST_DIR
        if not os.path.isdir(idx_dir):
            raise InputError("%s is missing: install Debian's dataset-fashion-mnist, or pass --idx DIR" % idx_dir)
    elif not os.path.isdir(idx_dir):
        raise InputError("no such folder: %s" % idx_dir)

    files = {s: tuple(find_idx(idx_dir, stem) for stem in stems) for s, stems in SPLITS.items()}
    out = os.path.join(out_root, name if limit is None else "%s-%d" % (name, limit))
    meta_path = os.path.join(out, "meta.json")
    fp = _fingerprint([p for pair in files.values() for p in pair])
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("fingerprint") == fp and all(os.path.isdir(os.path.join(out, s + "_lmdb")) for s in SPLITS):
            if not quiet:
                print("data: reusing %s (%d train, %d test)" % (out, meta["n_train"], meta["n_test"]))
            return DataInfo(name, os.path.join(out, "train_lmdb"), os.path.join(out, "test_lmdb"), meta["n_train"], meta["n_test"])

    counts = {}
    for split, (img_p, lab_p) in files.items():
        images, labels = load_split(img_p, lab_p)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if not quiet:
            print("data: %s %s: %d images %dx%d -> LMDB" % (name, split, images.shape[0], images.shape[1], images.shape[2]))
        _write_lmdb(os.path.join(out, split + "_lmdb"), images, labels)
        counts[split] = int(images.shape[0])
    meta = {"name": name, "source": os.path.abspath(idx_dir), "fingerprint": fp,
            "n_train": counts["train"], "n_test": counts["test"]}
    atomic_write(meta_path, json.dumps(meta, indent=2).encode())
    return DataInfo(name, os.path.join(out, "train_lmdb"), os.path.join(out, "test_lmdb"), counts["train"], counts["test"])
