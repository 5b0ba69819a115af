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
from typing import NamedTuple, Optional, Tuple

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


DEFAULT_VAL = 5000        # images taken from the training split for validation (MNIST's classic 55k/5k)
MAX_VAL_SHARE = 6         # ... but never more than 1/6 of the training split
VAL_SEED = 0


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
    # Validation split: every choice (presets, densities, bits, sensitivity) is made on it; the
    # test split is read only for the final figures. None: no separate split (ImageNet's val LMDB).
    val_lmdb: Optional[str] = None
    n_val: Optional[int] = None
    source: Optional[str] = None   # where the images came from, for the report

    def split(self, which: str) -> Tuple[str, int]:
        """(LMDB, record count) of "train", "val" or "test"; val falls back to test where there is none."""
        if which == "val" and self.val_lmdb:
            return self.val_lmdb, int(self.n_val)
        if which in ("val", "test"):
            return self.test_lmdb, int(self.n_test)
        return self.train_lmdb, int(self.n_train)

    @property
    def has_val(self) -> bool:
        return bool(self.val_lmdb)


def validation_split(labels: np.ndarray, n_val: int, seed: int = VAL_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), both ascending: a seeded slice of ``n_val`` records, stratified by label.

    Each class gives its share of ``n_val`` (largest remainders get the leftover
    records), chosen by a seeded permutation, so val keeps the class balance of
    the training split and the same seed always picks the same images.
    """
    labels = np.asarray(labels).ravel()
    n = labels.size
    if not 0 < n_val < n:
        raise InputError("validation split of %d records from a training split of %d" % (n_val, n))
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n_val / n)
    take = np.floor(exact).astype(np.int64)
    short = n_val - int(take.sum())
    if short:
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:short]] += 1
    val = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        val.append(idx[rng.permutation(idx.size)[:k]])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(n, bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def val_size(n_train: int, requested: Optional[int]) -> int:
    """Records to hold out: the request (default 5000), at most 1/6 of the training split."""
    cap = n_train // MAX_VAL_SHARE
    n = DEFAULT_VAL if requested is None else int(requested)
    if n < 1:
        raise InputError("--val must be >= 1, got %d" % n)
    return max(1, min(n, cap))


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
            out_root: str = "runs/data", quiet: bool = False, limit: int | None = None,
            val: int | None = None) -> DataInfo:
    """Make (or reuse) train/val/test LMDBs for a data set and return where they are.

    ``name`` defaults to "mnist" for files given with ``idx_dir``, else the
    embedded "fashion-mnist". ``limit`` keeps only the first N records of
    each split, for fast tests. ``val`` records (default 5000, at most a sixth)
    are held out of the training split, stratified and seeded
    (``validation_split``), as the validation split.
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
    fp = _fingerprint([p for pair in files.values() for p in pair]) + ":val=%s:seed=%d" % (val, VAL_SEED)
    lmdbs = {s: os.path.join(out, s + "_lmdb") for s in ("train", "val", "test")}
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("fingerprint") == fp and all(os.path.isdir(p) for p in lmdbs.values()):
            if not quiet:
                print("data: reusing %s (%d train, %d val, %d test)" % (out, meta["n_train"], meta["n_val"], meta["n_test"]))
            return _info(name, lmdbs, meta)

    images, labels = {}, {}
    for split, (img_p, lab_p) in files.items():
        images[split], labels[split] = load_split(img_p, lab_p)
        if limit is not None:
            images[split], labels[split] = images[split][:limit], labels[split][:limit]
    train_idx, val_idx = validation_split(labels["train"], val_size(labels["train"].size, val))
    parts = {"train": (images["train"][train_idx], labels["train"][train_idx]),
             "val": (images["train"][val_idx], labels["train"][val_idx]),
             "test": (images["test"], labels["test"])}
    for split, (im, lab) in parts.items():
        if not quiet:
            print("data: %s %s: %d images %dx%d -> LMDB" % (name, split, im.shape[0], im.shape[1], im.shape[2]))
        _write_lmdb(lmdbs[split], im, lab)
    meta = {"name": name, "source": os.path.abspath(idx_dir), "fingerprint": fp,
            "n_train": int(train_idx.size), "n_val": int(val_idx.size), "n_test": int(labels["test"].size),
            "n_train_source": int(labels["train"].size), "val_seed": VAL_SEED, "limit": limit}
    atomic_write(meta_path, json.dumps(meta, indent=2).encode())
    return _info(name, lmdbs, meta)


def _info(name: str, lmdbs, meta) -> DataInfo:
    return DataInfo(name, lmdbs["train"], lmdbs["test"], meta["n_train"], meta["n_test"],
                    val_lmdb=lmdbs["val"], n_val=meta["n_val"], source=meta.get("source"))
