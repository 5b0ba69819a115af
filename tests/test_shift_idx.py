"""tools/shift_idx.py: each image moved by its own offset with zero fill, labels and order kept, bad input refused."""
import gzip
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import shift_idx  # noqa: E402
from caffe_dc.base.idx import encode_idx, load_idx  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "shift_idx.py")


def test_offsets_are_nonzero_within_the_bound_and_seeded():
    m = shift_idx.offsets(5000, 2, seed=3)
    assert m.shape == (5000, 2)
    assert np.abs(m).max() == 2 and np.all(np.any(m != 0, axis=1))
    assert len(np.unique(m, axis=0)) == 24           # every nonzero offset of at most 2 px is drawn
    assert np.array_equal(m, shift_idx.offsets(5000, 2, seed=3))
    assert not np.array_equal(m, shift_idx.offsets(5000, 2, seed=4))


def test_each_image_moves_by_its_own_offset_with_zero_fill():
    rng = np.random.RandomState(0)
    images = rng.randint(1, 256, size=(30, 6, 7)).astype(np.uint8)  # no zero pixel: fill and wrap would show
    moves = shift_idx.offsets(30, 2, seed=1)
    out = shift_idx.shift(images, moves)
    for img, got, (dy, dx) in zip(images, out, moves):
        want = np.zeros_like(img)
        h, w = img.shape
        want[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            img[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        assert np.array_equal(got, want), (dy, dx)


def _pair(folder, n=40):
    rng = np.random.RandomState(2)
    images = rng.randint(0, 256, size=(n, 8, 8)).astype(np.uint8)
    labels = rng.randint(0, 10, size=n).astype(np.uint8)
    img = os.path.join(folder, "train-images-idx3-ubyte.gz")
    with open(img, "wb") as f:
        f.write(gzip.compress(encode_idx(images)))
    with open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(gzip.compress(encode_idx(labels)))
    return img, images, labels


def _run(*args):
    return subprocess.run([sys.executable, TOOL] + list(args), capture_output=True, text=True)


def test_the_written_pair_keeps_labels_and_order(tmp_path):
    img, images, labels = _pair(str(tmp_path))
    out = str(tmp_path / "shifted")
    r = _run(img, "--out", out, "--seed", "5")
    assert r.returncode == 0, r.stderr
    got = load_idx(os.path.join(out, "train-images-idx3-ubyte.gz"))
    assert np.array_equal(load_idx(os.path.join(out, "train-labels-idx1-ubyte.gz")), labels)
    assert np.array_equal(got, shift_idx.shift(images, shift_idx.offsets(len(images), 2, 5)))


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path):
    img, _, _ = _pair(str(tmp_path))
    out = str(tmp_path / "o")
    for args in ([str(tmp_path / "missing-images.gz"), "--out", out],
                 [img, "--out", str(tmp_path)],                       # would write over its input
                 [img, "--out", out, "--max-shift", "8"],             # out of an 8x8 frame
                 [img, "--out", out, "--max-shift", "0"]):
        r = _run(*args)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not os.path.exists(out)
    os.remove(os.path.join(str(tmp_path), "train-labels-idx1-ubyte.gz"))
    r = _run(img, "--out", out)
    assert r.returncode == 2 and "labels" in r.stderr and not os.path.exists(out)
