#!/usr/bin/env python3
"""An MNIST-format IDX pair whose images are translated by a small random offset: calibration images that look new.

Each image is moved by a seeded random integer offset (dx, dy), each in -S..S and not both 0
(``--max-shift S``, default 2), the uncovered border filled with zeros; its label is unchanged.
The output keeps the input's record order and count, so ``encode --calib-seed`` draws the same
records from it as from the input (issue 29: a net is right on nearly all of its own training
images, so a pool of them shows losses only; shifted, they read more like images it has not seen).

    python3 tools/shift_idx.py DATA/train-images-idx3-ubyte.gz --out OUT_FOLDER [--max-shift 2] [--seed 0]

Writes OUT_FOLDER/<the images file's name> and the labels beside it (the images name with
``images`` made ``labels``, as ``--calib`` looks for them), gzip-compressed when the input is.
"""
import gzip
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caffe_dc.base.errors import InputError  # noqa: E402
from caffe_dc.base.fileio import atomic_write, check_outputs, require_file  # noqa: E402
from caffe_dc.base.idx import encode_idx, labels_beside, load_split  # noqa: E402
from caffe_dc.cli.args import OneLineParser, int_at_least  # noqa: E402


def offsets(n: int, max_shift: int, seed: int) -> np.ndarray:
    """(n, 2) seeded (dy, dx), each drawn uniformly from the (2S+1)^2 - 1 nonzero offsets of at most S."""
    side = np.arange(-max_shift, max_shift + 1)
    grid = np.stack(np.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 2)
    grid = grid[np.any(grid != 0, axis=1)]
    return grid[np.random.RandomState(seed).randint(len(grid), size=n)]


def shift(images: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """``images`` (N, H, W) each translated by its (dy, dx) of ``moves``, zero fill: out[y + dy, x + dx] = in[y, x]."""
    n, h, w = images.shape
    s = int(np.abs(moves).max()) if n else 0
    padded = np.zeros((n, h + 2 * s, w + 2 * s), images.dtype)
    padded[:, s:s + h, s:s + w] = images
    out = np.empty_like(images)
    # One slice of the padded stack per distinct offset (at most 24): vectorised over its images.
    for dy, dx in np.unique(moves, axis=0):
        pick = np.flatnonzero((moves[:, 0] == dy) & (moves[:, 1] == dx))
        out[pick] = padded[pick, s - dy:s - dy + h, s - dx:s - dx + w]
    return out


def main() -> int:
    ap = OneLineParser(prog="shift_idx", description=__doc__.splitlines()[0])
    ap.add_argument("images", help="an MNIST-format images IDX file (.gz or not); its labels file beside it")
    ap.add_argument("--out", required=True, help="the folder to write the shifted pair to")
    ap.add_argument("--max-shift", type=int_at_least(1), default=2, help="largest offset in pixels (default 2)")
    ap.add_argument("--seed", type=int_at_least(0), default=0, help="seeds the offsets (default 0)")
    a = ap.parse_args()
    try:
        require_file(a.images, "images")
        labels_path = labels_beside(a.images)
        if labels_path is None:
            raise InputError("%s: an images file's name holds 'images' (its labels are named after it)" % a.images)
        require_file(labels_path, "labels")
        images, labels = load_split(a.images, labels_path)
        if a.max_shift >= min(images.shape[1:]):
            raise InputError("--max-shift %d moves a %dx%d image out of its frame" % ((a.max_shift,) + images.shape[1:]))
        outs = [os.path.join(a.out, os.path.basename(p)) for p in (a.images, labels_path)]
        check_outputs([a.images, labels_path], outs, [a.out])
    except InputError as e:
        print("shift_idx: error: %s" % e, file=sys.stderr)
        return 2
    moves = offsets(images.shape[0], a.max_shift, a.seed)
    shifted = shift(images, moves)
    pack = (lambda b: gzip.compress(b, compresslevel=6, mtime=0)) if a.images.endswith(".gz") else (lambda b: b)
    os.makedirs(a.out, exist_ok=True)
    atomic_write(outs[0], pack(encode_idx(shifted)))
    atomic_write(outs[1], pack(encode_idx(labels)))
    print("wrote %s and %s: %d images, offsets up to %d px (seed %d)" % (outs[0], outs[1], images.shape[0],
                                                                         a.max_shift, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
