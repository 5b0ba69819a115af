import gzip
import json
import os

import numpy as np
import pytest

from caffe_dc.pycaffe import datasets
from caffe_dc.base.errors import InputError
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
    info = datasets.prepare(out_root=str(tmp_path), quiet=True, limit=100)
    imgs, labels = datasets.read_lmdb(info.train_lmdb)
    assert imgs.shape == (100 - info.n_val, 1, 28, 28) and info.n_val == 16 and set(labels) <= set(range(10)) and len(set(labels)) > 5


def test_missing_idx_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no train-images-idx3-ubyte"):
        datasets.prepare(name="mnist", idx_dir=str(tmp_path / "empty"), out_root=str(tmp_path / "out"))


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    # Point the download at a closed loopback port: no traffic leaves the machine.
    monkeypatch.setenv("CAFFE_DC_MNIST_URL", "http://127.0.0.1:9/")
    with pytest.raises(InputError, match="--idx DIR"):
        datasets.prepare(download="mnist", out_root=str(tmp_path))


def test_cli_data_errors(tmp_path, cli):
    assert_clean_error(cli("data", "--idx", str(tmp_path / "nope")), "no such folder")
    make_idx_dir(str(tmp_path / "idx"))
    with open(str(tmp_path / "idx" / "train-images-idx3-ubyte.gz"), "r+b") as f:
        f.truncate(40)
    assert_clean_error(cli("data", "--idx", str(tmp_path / "idx"), "--data-root", str(tmp_path / "o")), "gzip")


def test_cli_data_writes_lmdb(tmp_path, cli):
    make_idx_dir(str(tmp_path / "idx"), gz=False)
    p = cli("data", "--idx", str(tmp_path / "idx"), "--data-root", str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    assert os.path.isdir(str(tmp_path / "o" / "mnist" / "train_lmdb"))
