import gzip
import struct

import numpy as np
import pytest

from caffe_dc.base.errors import InputError
from caffe_dc.base.idx import encode_idx, load_idx, load_split, parse_idx


def idx_bytes(arr):
    return encode_idx(np.asarray(arr, dtype=np.uint8))


def test_encode_idx_writes_mnists_headers():
    # MNIST's published layout: big-endian magic 2051 (images) / 2049 (labels), the count, then rows and columns
    imgs = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    assert encode_idx(imgs) == struct.pack(">IIII", 2051, 2, 28, 28) + imgs.tobytes()
    assert encode_idx(np.array([7, 1, 9], np.uint8)) == struct.pack(">II", 2049, 3) + b"\x07\x01\x09"
    with pytest.raises(ValueError):
        encode_idx(np.zeros(3, np.float32))


def test_parse_images_and_labels_round_trip():
    imgs = np.random.RandomState(0).randint(0, 256, size=(7, 28, 28)).astype(np.uint8)
    out = parse_idx(idx_bytes(imgs), ndim=3)
    assert out.shape == (7, 28, 28) and np.array_equal(out, imgs)
    labels = np.arange(7, dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(labels), ndim=1), labels)


def test_gzip_file(tmp_path):
    imgs = np.full((3, 4, 5), 9, dtype=np.uint8)
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(imgs)))
    assert np.array_equal(load_idx(str(p), ndim=3), imgs)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01\x00" + b[2:], "bad magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "not unsigned byte"),
    (lambda b: b[:-5], "truncated body"),
    (lambda b: b + b"\x00\x00", "unexpected bytes"),
    (lambda b: b[:6], "truncated header"),
    (lambda b: b[:3], "too short"),
])
def test_defects_named(mutate, message):
    good = idx_bytes(np.zeros((2, 3, 3)))
    with pytest.raises(InputError, match=message):
        parse_idx(mutate(good), "f", ndim=3)


def test_wrong_dimensions():
    with pytest.raises(InputError, match="expected 3 dimensions, found 1"):
        parse_idx(idx_bytes(np.zeros(5)), "f", ndim=3)


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 2, 2))))[:-6])
    with pytest.raises(InputError, match="gzip"):
        load_idx(str(p))


def test_split_count_mismatch(tmp_path):
    (tmp_path / "i").write_bytes(idx_bytes(np.zeros((3, 2, 2))))
    (tmp_path / "l").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(InputError, match="3 images but"):
        load_split(str(tmp_path / "i"), str(tmp_path / "l"))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such IDX file"):
        load_idx(str(tmp_path / "nope"))
