"""Trained quantization: k-means codebooks and the group-by-index gradient kernels.

*Deep Compression*, section 3. Each layer's surviving weights are clustered
by k-means (layers never share a codebook); every weight is then stored as
a small code into its layer's codebook, and fine-tuning trains the
centroids: dL/dC_k = sum_ij dL/dW_ij * 1(I_ij = k).

Data model shared with the rest of caffe-dc (Caffe blobs, the ``.net``
format, the Huffman coder):

* ``codebook``: float32[2**bits]. ``codebook[0] == 0.0`` is reserved for
  "pruned" (the authors' convention), so 2**bits - 1 centroids are free for
  the kept weights, and no other entry is 0.0.
* ``codes``: uint8 (bits <= 8) or uint16, the weight's shape, 0 exactly
  where the weight is 0.0.
* The quantized weights are ``codebook[codes]``, bit for bit.

Pure numpy (``lloyd_1d``: scikit-learn's Lloyd iterations, done in one dimension), no Caffe.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from caffe_dc.base.blobs import CODEBOOK, CODES, blob_name
from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import check_bits
from caffe_dc.base.params import LayerParams, Params
# The named options live in a numpy-free module so that the CLI can list their choices cheaply.
from caffe_dc.algorithms.cluster_config import CentroidGrad, Init  # noqa: F401 (re-exported)

# A centroid may not be exactly 0.0, because code 0 means "pruned". One that
# lands there (a cluster whose mean is 0, or a 0.0 in the data) moves to the
# smallest *normal* positive float32 rather than the smallest subnormal: BLAS
# kernels running with denormals-are-zero would read a subnormal weight as 0.
NONZERO_EPS = np.float32(np.finfo(np.float32).tiny)


# scikit-learn's defaults, kept from when k-means ran there. Lloyd's algorithm
# converges slowly on 1-D data with many clusters; a tighter tol buys little
# before fine-tuning moves the centroids anyway.
KMEANS_TOL = 1e-4
KMEANS_MAX_ITER = 300


def _values(values) -> np.ndarray:
    v = np.asarray(values).ravel()
    if v.size and not np.isfinite(v).all():
        raise InputError("weights contain NaN or infinity: the model is broken, refusing to quantize it")
    return v.astype(np.float32, copy=False)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError("the number of clusters must be an integer >= 1, got %r" % (k,))
    return int(k)


def init_centroids(values, k: int, init: Init = Init.LINEAR, seed: int = 0) -> np.ndarray:
    """Initial centroids (float64, ascending) for ``values``; see ``Init``.

    LINEAR and DENSITY return exactly k points, which can repeat when the
    data has fewer distinct values than k or heavy ties; RANDOM returns
    min(k, number of distinct values) distinct points. ``kmeans`` removes
    repeats before fitting.
    """
    init = Init.parse(init)
    k = _check_k(k)
    v = _values(values).astype(np.float64)
    if v.size == 0:
        raise InputError("cannot place centroids on an empty set of weights")
    if init is Init.LINEAR:
        return np.linspace(v.min(), v.max(), k)
    if init is Init.DENSITY:
        return np.quantile(v, (np.arange(k) + 0.5) / k)
    distinct, counts = np.unique(v, return_counts=True)
    rng = np.random.default_rng(seed)
    pick = rng.choice(distinct.size, size=min(k, distinct.size), replace=False, p=counts / counts.sum())
    return np.sort(distinct[pick])


def _top_up(start: np.ndarray, distinct: np.ndarray, k: int) -> np.ndarray:
    """``start`` without repeats, filled to k points with data values evenly spread over the rest.

    Needs distinct.size >= k. Repeated initial centroids would tie for the
    same points and leave clusters empty from the first iteration; the
    fill is deterministic and spreads the extra centroids over the data
    (Lloyd's relocation of empty clusters would send them to the outliers).
    """
    u = np.unique(start)
    if u.size >= k:
        return u[:k]
    rest = np.setdiff1d(distinct, u, assume_unique=True)
    idx = np.rint(np.linspace(0, rest.size - 1, k - u.size)).astype(np.intp)
    return np.sort(np.concatenate([u, rest[idx]]))


def nearest(x, sorted_centroids) -> np.ndarray:
    """Index of the nearest centroid for each x (1-D: a binary search on the midpoints).

    ``sorted_centroids`` ascending; a value exactly halfway between two
    centroids goes to the lower one, and a value equal to a centroid to that
    centroid (so, for distinct sorted values, this is also their exact lookup).
    """
    c = np.asarray(sorted_centroids, dtype=np.float64)
    return np.searchsorted((c[:-1] + c[1:]) / 2.0, np.asarray(x).astype(np.float64, copy=False)).astype(np.intp)


def pad_codebook(codebook, bits: int) -> np.ndarray:
    """``codebook`` (entry 0 the reserved 0.0, then the centroids) as float32[2**bits].

    The slots after the last given entry repeat it, so a codebook whose
    centroids ascend stays ascending from index 1 and holds 0.0 only at
    index 0 (the ``.net`` format's rule); a codebook of the zero entry
    alone pads with ``NONZERO_EPS``. No code points at the padding, so the
    weights ``codebook[codes]`` do not change.
    """
    cb = np.asarray(codebook, dtype=np.float32).ravel()
    K = 1 << int(bits)
    if not 1 <= cb.size <= K:
        raise InputError("a codebook of %d entries does not fit %d bits (1..%d entries)" % (cb.size, bits, K))
    out = np.empty(K, dtype=np.float32)
    out[:cb.size] = cb
    out[cb.size:] = cb[-1] if cb.size > 1 else NONZERO_EPS
    return out


def _finish(distinct: np.ndarray, centers) -> Tuple[np.ndarray, np.ndarray]:
    """float32 centroids that are nonzero, distinct, ascending and all used; labels of ``distinct``.

    ``distinct`` is sorted ascending, so the labels are runs cut at the
    centroids' midpoints (``nearest``'s rule: a value halfway goes down).
    """
    c = np.asarray(centers, dtype=np.float64).ravel()
    c = c[np.isfinite(c)].astype(np.float32)
    if c.size == 0:  # cannot happen with Lloyd (empty clusters are relocated); be safe anyway
        c = np.array([distinct.mean()], dtype=np.float32)
    c[c == 0] = NONZERO_EPS
    c = np.unique(c)
    c64 = c.astype(np.float64)
    cut = np.searchsorted(np.asarray(distinct, dtype=np.float64), (c64[:-1] + c64[1:]) / 2.0, side="right")
    sizes = np.diff(np.concatenate([[0], cut, [np.size(distinct)]]))
    used = sizes > 0   # drop centroids no weight is nearest to (empty clusters)
    return c[used], np.repeat(np.arange(int(used.sum())), sizes[used])


def kmeans(values, k: int, init: Init = Init.LINEAR, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """1-D k-means of ``values``; returns (centroids float32[k'], labels intp).

    One run of Lloyd's algorithm from the given initialisation, as the paper
    does (tol and max_iter: ``KMEANS_TOL``, ``KMEANS_MAX_ITER``), then one
    final M-step. It is the run scikit-learn's ``KMeans(init=<array>,
    n_init=1, algorithm="lloyd")`` makes (this module used it until it was
    replaced by ``lloyd_1d``, which gives the same clusters in a fraction of
    the time: see ``lloyd_1d``). The result is always usable:

    * k' <= k centroids, ascending, distinct, finite, none exactly 0.0
      (see ``NONZERO_EPS``), each the nearest centroid of at least one
      value; ``labels[i]`` is the index of the nearest centroid to
      ``values[i]``, so ``centroids[labels]`` is the quantized data.
    * k >= number of distinct values (a constant layer included): no
      fitting is needed, the centroids are the distinct values themselves.
    * Repeated initial centroids are replaced by unused data values before
      fitting; clusters that still end empty are dropped, never returned
      as NaN.
    * The fit runs on the distinct values weighted by their counts, which
      is the same k-means problem (identical Lloyd iterations) and faster
      when weights repeat, e.g. re-quantizing a quantized layer.
    """
    init = Init.parse(init)
    k = _check_k(k)
    v = _values(values)
    if v.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.intp)
    order = argsort_float32(v)
    distinct, counts = _runs(v[order])
    if distinct.size <= k:
        c, labels = _finish(distinct, distinct)
    else:
        d64 = distinct.astype(np.float64)
        w = counts.astype(np.float64)
        start = _top_up(init_centroids(v, k, init, seed), d64, k)
        # The stopping rule is relative to the variance of the raw weights (not of their distinct set).
        tol = KMEANS_TOL * float(np.var(v, dtype=np.float64))
        centres, lab = lloyd_1d(d64, w, start, tol, KMEANS_MAX_ITER)
        # Lloyd stopping on tol leaves the centres from *before* the last update (with the labels
        # assigned to them); one more M-step puts every centroid at the mean of its cluster. Empty
        # clusters keep their centre here and are dropped by _finish.
        cnt = np.bincount(lab, weights=w, minlength=k)
        full = cnt > 0
        centres[full] = np.bincount(lab, weights=w * d64, minlength=k)[full] / cnt[full]
        c, labels = _finish(distinct, centres)
    out = np.empty(v.size, dtype=np.intp)
    out[order] = np.repeat(labels, counts)
    return c, out


def argsort_float32(v: np.ndarray) -> np.ndarray:
    """The permutation that sorts float32 values (no NaN) ascending, in O(n).

    The bits of a float32 turned into an unsigned key of the same order
    (negative values: all bits flipped; others: the sign bit set), then two
    stable radix passes of 16 bits (numpy sorts 16-bit integers by radix):
    about twice as fast as a comparison sort of the floats.
    """
    u = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32)
    flip = (u.view(np.int32) >> 31).view(np.uint32)      # all ones for a negative value, else 0
    flip >>= 1
    flip |= np.uint32(0x80000000)
    key = u ^ flip
    low = np.argsort(key.astype(np.uint16), kind="stable")
    return low[np.argsort((key >> 16).astype(np.uint16)[low], kind="stable")]


def _runs(s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(distinct values, their counts) of sorted values."""
    first = np.empty(s.size, dtype=bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    idx = np.flatnonzero(first)
    return s[idx], np.diff(np.append(idx, s.size))


def lloyd_1d(x: np.ndarray, w: np.ndarray, centers: np.ndarray, tol: float,
             max_iter: int) -> Tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm on sorted, distinct 1-D points ``x`` with weights ``w``.

    Returns (centres float64[k], label of every point). The iterations are
    those of scikit-learn's ``KMeans(algorithm="lloyd")`` as in the image
    (0.23): assign every point to its nearest centre, move every centre to
    the weighted mean of its points, relocate each empty cluster to one of
    the points farthest from their centres (``np.argpartition``, as sklearn
    does), and stop when no label changes or the centres moved less than
    ``tol`` in all (sum of squared shifts), keeping the centres of that last
    assignment; after ``max_iter`` updates, points are assigned once more.
    Like sklearn, it works on the data minus its mean.

    In one dimension a cluster is a run of consecutive sorted points, cut at
    the midpoints between neighbouring centres, so an iteration is a binary
    search of the k - 1 midpoints in ``x`` and differences of prefix sums:
    O(k log n) instead of sklearn's O(n k). The prefix sums are accumulated
    in extended precision (``np.longdouble``, a 64-bit mantissa on x86), so
    a cluster's sum is as exact as sklearn's sum of its points (a float64
    prefix carries the rounding of everything before the cluster, which was
    seen to tip a run onto another path). A point exactly halfway between
    two centres goes to the lower one, where sklearn compares distances
    rounded by BLAS; labels can differ only for points that close to a
    midpoint. On float32 weights that is rare enough that the quantizer's
    codebooks come out bit-identical to the sklearn-based ones (see
    tests/test_quantization.py); on heavily tied data (weights on a coarse
    grid) a tie can send the run down another path, to a clustering as good.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    mean = x.mean()
    x = x - mean
    n, k = x.size, centers.size
    cw = np.zeros(n + 1)
    np.cumsum(w, out=cw[1:])
    cwx = np.zeros(n + 1, dtype=np.longdouble)
    np.cumsum(w * x, out=cwx[1:])
    c = np.asarray(centers, dtype=np.float64) - mean
    key_old = None
    for _ in range(max_iter):
        order, bounds = _assign_runs(x, c)
        nonempty = bounds[1:] > bounds[:-1]
        key = (order[nonempty], bounds[:-1][nonempty])   # the labels, as runs: same key, same labels
        wts = np.empty(k)
        sums = np.empty(k)
        wts[order] = cw[bounds[1:]] - cw[bounds[:-1]]
        sums[order] = (cwx[bounds[1:]] - cwx[bounds[:-1]]).astype(np.float64)
        empty = np.flatnonzero(wts == 0)
        if empty.size:
            _relocate(x, w, c, order, bounds, empty, sums, wts)
        new = sums.copy()
        full = wts > 0
        new[full] = sums[full] * (1.0 / wts[full])
        if key_old is not None and all(np.array_equal(a, b) for a, b in zip(key, key_old)):
            break
        if float(((new - c) ** 2).sum()) <= tol:
            break
        c, key_old = new, key
    else:
        order, bounds = _assign_runs(x, c)   # max_iter updates: label the final centres
    return c + mean, np.repeat(order, np.diff(bounds))


def _assign_runs(x: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest-centre assignment of sorted points as runs: (centre ids by value, run bounds).

    Run ``j`` (points ``bounds[j]:bounds[j + 1]``) belongs to centre
    ``order[j]``. Equal centres: the one of lowest id takes the points (the
    others get empty runs), as an argmin over ids would.
    """
    order = np.argsort(c, kind="stable")
    cs = c[order]
    cut = np.searchsorted(x, (cs[:-1] + cs[1:]) / 2.0, side="right")
    tie = cs[1:] == cs[:-1]
    if tie.any():   # a cut after a tied centre moves to the next cut after a distinct one (or the end)
        nxt = np.where(tie, cs.size - 1, np.arange(cs.size - 1))
        nxt = np.minimum.accumulate(nxt[::-1])[::-1]
        cut = np.append(cut, x.size)[nxt]
    return order, np.concatenate([[0], cut, [x.size]])


def _relocate(x, w, c, order, bounds, empty, sums, wts) -> None:
    """sklearn's empty-cluster rule, in place on the clusters' weighted sums and weights.

    Each empty cluster (in id order) takes one of the points farthest from
    their centres, which leaves its old cluster.
    """
    labels = np.repeat(order, np.diff(bounds))
    dist = (x - c[labels]) ** 2
    far = np.argpartition(dist, -empty.size)[:-empty.size - 1:-1]
    for new_id, f in zip(empty, far):
        old_id = labels[f]
        sums[old_id] -= x[f] * w[f]
        sums[new_id] = x[f] * w[f]
        wts[new_id] = w[f]
        wts[old_id] -= w[f]


def code_dtype(bits: int):
    return np.uint8 if bits <= 8 else np.uint16


def attach_codebook(params: Params, layer: str, codebook, codes) -> None:
    """Put ``layer``'s ``L_codebook`` (float32) and ``L_codes`` (the smallest unsigned integer type
    that holds them) beside it in ``params``: how a quantized layer travels to the encoder, the
    prototxt rewriter and the caffemodel writer (which stores both as floats, exactly)."""
    codebook = np.asarray(codebook, dtype=np.float32)
    bits = max(1, (int(codebook.size) - 1).bit_length())
    params[blob_name(layer, CODEBOOK)] = LayerParams("Parameter", [codebook])
    params[blob_name(layer, CODES)] = LayerParams("Parameter", [np.asarray(codes).astype(code_dtype(bits))])


def quantize_layer(w, bits: int, init: Init = Init.LINEAR, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Cluster a layer's nonzero weights; returns (codebook float32[2**bits], codes of w's shape).

    The nonzero weights get at most 2**bits - 1 centroids (codes 1..k',
    ascending by value); zeros get code 0 and ``codebook[0] = 0.0``. Slots
    beyond k' (fewer distinct weights than centroids, or empty clusters)
    repeat the largest centroid, so the codebook stays ascending from index
    1, deterministic, and 0.0 only at index 0; no code points at them. A
    layer with no nonzero weight pads with ``NONZERO_EPS``.
    """
    bits = check_bits(bits)
    w = np.asarray(w)
    flat = _values(w)
    K = 1 << bits
    nz = np.flatnonzero(flat != 0)             # via bool: several times faster than on the floats
    centroids, labels = kmeans(flat[nz], K - 1, init, seed)
    codebook = pad_codebook(np.concatenate([[0.0], centroids]), bits)
    codes = np.zeros(flat.size, dtype=code_dtype(bits))
    codes[nz] = labels + 1
    return codebook, codes.reshape(w.shape)


# --- the fine-tuning kernel ---------------------------------------------------
#
# The solver hooks (``pycaffe.hooks``) call this every iteration on every
# quantized layer, so it stays at one gather, one bincount and one scatter
# over the kept weights plus a memset.

class GroupedDiff:
    """Group by index, in place: each kept weight's gradient becomes its cluster's gradient.

    dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k) (or its mean, ``CentroidGrad.MEAN``).
    Weights of one cluster then move together, exactly as their shared
    centroid would under SGD; pruned weights (code 0) get 0. The kept
    positions and their codes are found once, so a layer that keeps a share
    p of its weights costs p*n work per call plus the memset.
    """

    def __init__(self, codes_flat: np.ndarray, K: int, reduce: CentroidGrad = CentroidGrad.SUM):
        codes = np.asarray(codes_flat).ravel()
        self.kept = np.flatnonzero(codes)
        self.codes = codes[self.kept].astype(np.intp)
        self.K = int(K)
        if self.codes.size and self.codes.max() >= self.K:
            raise ValueError("codes go up to %d but the codebook has %d entries" % (self.codes.max(), K))
        self.reduce = CentroidGrad.parse(reduce)
        self.scale = None
        if self.reduce is CentroidGrad.MEAN:
            counts = np.bincount(self.codes, minlength=self.K).astype(np.float64)
            self.scale = 1.0 / np.maximum(counts, 1.0)

    def centroid_gradients(self, diff_flat: np.ndarray) -> np.ndarray:
        """dL/dC_k for every centroid (float64[K]); entry 0, the pruned code, is 0."""
        g = np.bincount(self.codes, weights=diff_flat[self.kept], minlength=self.K)
        return g if self.scale is None else g * self.scale

    def __call__(self, diff_flat: np.ndarray) -> np.ndarray:
        g = self.centroid_gradients(diff_flat).astype(diff_flat.dtype)
        diff_flat.fill(0)
        diff_flat[self.kept] = g[self.codes]
        return diff_flat


def compression_rate(n: int, b: int, k: int) -> float:
    """r = n*b / (n*log2(k) + k*b): n weights of b bits shared through k clusters (section 3).

    Counts the log2(k)-bit codes and the k-entry b-bit codebook, but no
    sparse index (the tables' P+Q rates include it).
    """
    if n <= 0 or b <= 0 or k < 1:
        raise InputError("compression rate needs n > 0, b > 0, k >= 1; got n=%r b=%r k=%r" % (n, b, k))
    return n * b / (n * math.log2(k) + k * b)
