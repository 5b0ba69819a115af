"""Layer-wise reconstruction without retraining: refit what pruning keeps so the layer still does its job.

A pruned and quantized layer is asked to reproduce, on calibration inputs,
the outputs of the dense layer it replaces. Pure numpy, everything through
second moments of the layer's input patches:

* ``Moments`` accumulates, batch by batch, the Gram matrix of the patches the
  compressed net feeds the layer (``X_c``; its prefix already compressed),
  their cross product with the patches the dense net feeds it (``X_d``), or
  given the dense weights only that product times them, and their sums. For a
  convolution a patch is an im2col row (``im2col``: stride, pad, dilation, one
  Gram per group); an InnerProduct is the 1x1 case, one row per image.
* ``refit``: for each output channel, the ridge least-squares weights on its
  kept support (and its bias) that best reproduce ``X_d w_dense + b_dense``
  from ``X_c``; the ridge pulls towards the pruned dense weights, so an
  ill-determined direction keeps its magnitude-pruned value rather than
  blowing up. One batched solve for all channels (L-OBS's closed-form update,
  Dong et al. 2017, restricted to the kept support as in OBC, Frantar and
  Alistarh 2022; with X_c != X_d the refit also absorbs the earlier layers'
  error, as AdaRound's layer-wise objective does, Nagel et al. 2020).
* ``correct_bias``: the bias that, for the layer's final (quantized)
  weights, makes the mean output equal the dense layer's: the least-squares
  bias for fixed weights (bias correction, Nagel et al. 2019).

Shapes: a convolution's weights are (out, in / group, kh, kw) (Caffe's), an
InnerProduct's (out, in); moments are float64.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

RIDGE = 1e-3          # the ridge, as a share of the mean diagonal of the Gram matrix
ROWS_PER_UNKNOWN = 4  # calibration rows a refitted channel needs per weight it fits (``refit``)
SOLVE_BYTES = 64 << 20  # memory for the stacked per-channel systems solved at once
PAD_SHARE = 0.8         # a stack of systems holds sets down to this share of its largest (padding < 2x the work)


class Geometry(NamedTuple):
    """How a layer reads its input: a convolution's window, or the 1x1 case (``Geometry.dense()``).

    ``fc`` layers take each image's whole input as one patch (``axis`` 1 flattening, Caffe's
    default); a convolution's patches follow Caffe's im2col order (channel, kernel row, kernel column)."""
    kernel: Tuple[int, int] = (1, 1)
    stride: Tuple[int, int] = (1, 1)
    pad: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    group: int = 1
    fc: bool = False
    upsample: Tuple[int, int] = (1, 1)   # zeros inserted between input pixels first: a Deconvolution's stride

    @classmethod
    def dense(cls) -> "Geometry":
        return cls(fc=True)


def out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def im2col(x: np.ndarray, g: Geometry) -> np.ndarray:
    """Patches of a batch, (group, rows, columns): one row per image (fc) or per output position.

    ``x``: (N, C, H, W) for a convolution, (N, ...) for an fc layer. Columns of group ``j`` are its
    C/group channels' windows in the order of the weights' (in / group, kh, kw) axes, so a channel's
    output is ``cols[j] @ w[o].ravel()``.
    """
    x = np.asarray(x)
    if g.fc:
        return x.reshape(1, x.shape[0], -1)
    if g.upsample != (1, 1):
        n, c, h, w = x.shape
        up = np.zeros((n, c, (h - 1) * g.upsample[0] + 1, (w - 1) * g.upsample[1] + 1), x.dtype)
        up[:, :, ::g.upsample[0], ::g.upsample[1]] = x
        x = up
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.pad, g.dilation
    ho, wo = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else np.ascontiguousarray(x)
    s = xp.strides
    # a read-only view (N, C, kh, kw, Ho, Wo): window offsets step by dilation, positions by stride
    v = as_strided(xp, (n, c, kh, kw, ho, wo), (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw),
                   writeable=False)
    cg = c // g.group
    v = v.reshape(n, g.group, cg, kh, kw, ho, wo).transpose(1, 0, 5, 6, 2, 3, 4)
    return v.reshape(g.group, n * ho * wo, cg * kh * kw)


class Moments:
    """Second moments of one layer's input patches, accumulated over calibration batches.

    ``add(xc, xd)``: the layer's inputs in the compressed net and in the dense net for the same images
    (``xd`` None: the same as ``xc``, a layer whose prefix is still dense).
    """

    def __init__(self, geometry: Geometry, weights: Optional[np.ndarray] = None):
        self.g = geometry
        self.n = 0
        self.hc = self.cross = self.sc = self.sd = None
        self.exact = True        # every batch came with xd None: the compressed inputs are the dense ones
        # with the dense weights the refit will target, ``cross`` keeps only X_c^T X_d w (a column per
        # output channel, ``targets``) rather than X_c^T X_d: a convolution's d x d product costs d / out
        # times as much (LeNet-5's conv2: 500 x 500 for 50 channels), on every fold of every candidate
        self.w = None if weights is None else np.asarray(weights, np.float32)

    def add(self, xc: np.ndarray, xd: Optional[np.ndarray] = None) -> None:
        # float32 products (the activations are float32 anyway), accumulated in float64 across batches
        pc = im2col(np.asarray(xc, dtype=np.float32), self.g)
        pd = pc if xd is None else im2col(np.asarray(xd, dtype=np.float32), self.g)
        self.exact = self.exact and xd is None
        if pd.shape != pc.shape:
            raise ValueError("compressed and dense inputs differ in shape: %s vs %s" % (pc.shape, pd.shape))
        hc = np.matmul(pc.transpose(0, 2, 1), pc).astype(np.float64)
        if self.w is not None:
            wg = self.w.reshape(pc.shape[0], -1, pc.shape[2])                     # (group, per, d)
            cross = np.matmul(pc.transpose(0, 2, 1), np.matmul(pd, wg.transpose(0, 2, 1))).astype(np.float64)
        else:
            cross = hc if xd is None else np.matmul(pc.transpose(0, 2, 1), pd).astype(np.float64)
        sc = pc.sum(axis=1, dtype=np.float64)
        sd = sc if xd is None else pd.sum(axis=1, dtype=np.float64)
        if self.hc is None:
            self.hc, self.cross, self.sc, self.sd = hc, cross.copy(), sc, sd.copy()
        else:
            self.hc += hc
            self.cross += cross
            self.sc += sc
            self.sd += sd
        self.n += pc.shape[1]

    @classmethod
    def total(cls, parts: Sequence["Moments"]) -> "Moments":
        """The moments of the union of the images of ``parts`` (disjoint), as if added batch by batch."""
        m = cls(parts[0].g, parts[0].w)
        for p in parts:
            if p.hc is None:
                continue
            if m.hc is None:
                m.hc, m.cross, m.sc, m.sd = p.hc.copy(), p.cross.copy(), p.sc.copy(), p.sd.copy()
            else:
                m.hc += p.hc
                m.cross += p.cross
                m.sc += p.sc
                m.sd += p.sd
            m.n += p.n
            m.exact = m.exact and p.exact
        return m

    def targets(self, gi: int, w: np.ndarray) -> np.ndarray:
        """Row p: ``X_c^T X_d w[p]`` for group ``gi``'s dense weights ``w`` (per, d)."""
        if self.w is None:
            return w @ self.cross[gi].T
        if not np.array_equal(self.w.reshape(self.hc.shape[0], -1, self.hc.shape[1])[gi], np.asarray(w, np.float32)):
            raise ValueError("these moments were kept for other dense weights")
        return self.cross[gi].T

    def _check(self, w: np.ndarray) -> Tuple[int, int]:
        if self.hc is None:
            raise ValueError("no calibration inputs were added")
        groups, d = self.hc.shape[0], self.hc.shape[1]
        out = w.shape[0]
        if out % groups or int(np.prod(w.shape[1:])) != d:
            raise ValueError("weights of shape %s do not match %d groups of %d-value patches" % (w.shape, groups, d))
        return groups, out // groups

    def output_error(self, w: np.ndarray, b: Optional[np.ndarray], w_ref: np.ndarray,
                     b_ref: Optional[np.ndarray]) -> np.ndarray:
        """Per output channel, the mean squared difference between ``X_c w + b`` and ``X_d w_ref + b_ref``.

        From the moments alone; it also needs ``X_d``'s own Gram, which ``add`` does not keep, so it is
        exact only when the inputs were the same (``xd`` None): the tests' measure of a refit."""
        groups, per = self._check(w)
        wc = np.asarray(w, np.float64).reshape(groups, per, -1)
        wr = np.asarray(w_ref, np.float64).reshape(groups, per, -1)
        e = wc - wr
        quad = np.einsum("gpi,gij,gpj->gp", e, self.hc, e)
        db = np.zeros((groups, per)) if b is None else (np.asarray(b, np.float64) - (0 if b_ref is None else b_ref)).reshape(groups, per)
        lin = 2 * db * np.einsum("gpi,gi->gp", e, self.sc)
        return ((quad + lin) / self.n + db ** 2).ravel()


def refit(m: Moments, w_dense: np.ndarray, b_dense: Optional[np.ndarray], mask: np.ndarray,
          ridge: float = RIDGE, start: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None,
          rows: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(weights, bias): each output channel's kept weights (``mask`` True) and bias refitted.

    Minimises ``|X_c v + beta - (X_d w + b)|^2 + lam |v - w0|^2`` over the ``v`` that are 0 off the
    channel's kept support (the bias unpenalised; absent if ``b_dense`` is None), ``lam = ridge`` times
    the mean diagonal of the group's Gram matrix; pruned weights come out exactly 0. ``w0`` is the pruned
    dense weights, or ``start`` (weights, bias) where the layer was trained since (a later prune round:
    a channel the refit leaves alone keeps what retraining made of it, not the dense weights).

    With ``A`` the system's matrix, a channel is solved on whichever is smaller: its kept support
    S (``A_SS v_S = r_S``), or its pruned set P, from the unconstrained optimum ``u = A^-1 r`` (Optimal
    Brain Surgeon's removal of several weights at once: ``v = u - A^-1_{:P} (A^-1_PP)^-1 u_P``), so a
    dense or a sparse layer costs little. The channels' small systems are stacked and solved together.

    A channel that keeps more than one weight (its bias included) per ``ROWS_PER_UNKNOWN`` rows of
    calibration data is not refitted: it keeps its pruned ``w0`` (the bias is corrected after
    quantization). With fewer rows a fit reproduces its own images whatever it does to new ones: a
    half-width ResNet-50 (last stage: one row an image, up to 2,304 inputs) with every channel refitted
    on 350 images lost nothing on them up to 28x, and 3.97 pp on the test set (docs/post-hoc.md).
    ``rows`` (default ``m.n``) is the count that rule reads: a cross-fitting fold's refit reads the
    file's, so that it refits the channels the file will.
    """
    w_dense = np.asarray(w_dense)
    groups, per = m._check(w_dense)
    d = m.hc.shape[1]
    wd = w_dense.reshape(groups, per, d).astype(np.float64)
    keep = np.asarray(mask, bool).reshape(groups, per, d)
    has_b = b_dense is not None
    bd = np.asarray(b_dense, np.float64).reshape(groups, per) if has_b else None
    w0 = wd if start is None else np.asarray(start[0]).reshape(groups, per, d).astype(np.float64)
    b0 = bd if start is None or not has_b else np.asarray(start[1], np.float64).reshape(groups, per)
    out_w = np.zeros_like(wd)
    out_b = b0.copy() if has_b else None
    for gi in range(groups):
        # moments with the bias as a column of ones: [X, 1]^T [X, 1], and [X_c, 1]^T (X_d w_p + b_p)
        h = m.hc[gi]
        lam = ridge * float(np.trace(h)) / d if d else 0.0
        penal = np.full(d, lam)
        targets, prior, support = wd[gi], w0[gi], keep[gi]
        rhs = m.targets(gi, wd[gi])
        if has_b:
            h = np.block([[h, m.sc[gi][:, None]], [m.sc[gi][None, :], np.array([[m.n]], float)]])
            rhs = np.concatenate([rhs + bd[gi][:, None] * m.sc[gi][None, :],
                                  (targets @ m.sd[gi] + m.n * bd[gi])[:, None]], axis=1)
            targets = np.concatenate([targets, bd[gi][:, None]], axis=1)    # (per, d + 1)
            prior = np.concatenate([prior, b0[gi][:, None]], axis=1)
            support = np.concatenate([support, np.ones((per, 1), bool)], axis=1)
            penal = np.append(penal, 0.0)
        a = h + np.diag(penal)
        rhs = rhs + penal * prior                   # row p: X_c^T X_d w_p + lam w0_p
        sol = np.where(support, prior, 0.0)       # a channel not refitted: its pruned start weights
        n_kept = support.sum(axis=1)
        fit = refittable(m.n if rows is None else rows, keep[gi].sum(axis=1), has_b)
        small = fit & (n_kept <= support.shape[1] - n_kept)
        big = fit & ~small
        if small.any():
            sol[small] = _stacked_solve(a, support[small], rhs[small])
        if big.any():
            ainv = np.linalg.inv(a)
            u = rhs[big] @ ainv                      # A is symmetric
            z = _stacked_solve(ainv, ~support[big], u)
            sol[big] = u - z @ ainv
        sol[~support] = 0.0
        out_w[gi] = sol[:, :d]
        if has_b:
            out_b[gi] = sol[:, d]
    w = out_w.reshape(w_dense.shape).astype(np.float32)
    return w, (out_b.ravel().astype(np.float32) if has_b else None)


def refittable(rows: int, kept: np.ndarray, has_bias: bool) -> np.ndarray:
    """Per channel keeping ``kept`` weights: whether ``rows`` calibration rows are enough to refit it
    (``ROWS_PER_UNKNOWN`` a fitted weight, its bias included)."""
    return (np.asarray(kept) + int(has_bias)) * ROWS_PER_UNKNOWN <= rows


def _stacked_solve(a: np.ndarray, sets: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Row p: the solution of ``a[S_p, S_p] x = rhs[p, S_p]`` placed at S_p (``sets[p]`` True), 0 elsewhere.

    The rows are taken from the largest set down, in stacks of sets within ``PAD_SHARE`` of the
    stack's largest and of ``SOLVE_BYTES``; each system is padded to its stack's largest set with the
    identity (a zero right-hand side there) and the stack solved at once. Magnitude pruning keeps
    very different counts per channel (LeNet-5's ip1 at 3.5%: 28 a channel on average, 101 at most),
    and one stack padded to the largest cost 17 times the solves."""
    out = np.zeros((sets.shape[0], a.shape[0]))
    sizes = sets.sum(axis=1)
    order = np.argsort(-sizes, kind="stable")
    lo = 0
    while lo < len(order) and sizes[order[lo]] > 0:
        k = int(sizes[order[lo]])
        hi = min(len(order), lo + max(1, SOLVE_BYTES // (8 * k * k)))
        hi = lo + int(np.count_nonzero(sizes[order[lo:hi]] >= PAD_SHARE * k))
        rows = order[lo:hi]
        s = sets[rows]
        # each row's set first, padded with its other indices (real ones, so the gather is well-formed)
        idx = np.argsort(~s, axis=1, kind="stable")[:, :k]
        valid = np.take_along_axis(s, idx, axis=1)
        sub = a[idx[:, :, None], idx[:, None, :]]
        pad = ~valid
        sub[pad[:, :, None] | pad[:, None, :]] = 0.0
        diag = np.arange(k)
        sub[:, diag, diag] += pad
        r = np.where(valid, np.take_along_axis(rhs[rows], idx, axis=1), 0.0)
        x = np.linalg.solve(sub, r[..., None])[..., 0]
        part = np.zeros((len(rows), a.shape[0]))
        np.put_along_axis(part, idx, np.where(valid, x, 0.0), axis=1)
        out[rows] = part
        lo = hi
    return out


def correct_bias(m: Moments, w: np.ndarray, w_dense: np.ndarray, b_dense: np.ndarray) -> np.ndarray:
    """The bias that makes the mean of ``X_c w + b`` equal the mean of ``X_d w_dense + b_dense``, per channel."""
    groups, per = m._check(np.asarray(w))
    wq = np.asarray(w, np.float64).reshape(groups, per, -1)
    wd = np.asarray(w_dense, np.float64).reshape(groups, per, -1)
    mean_d = np.einsum("gpi,gi->gp", wd, m.sd) / m.n
    mean_c = np.einsum("gpi,gi->gp", wq, m.sc) / m.n
    return (np.asarray(b_dense, np.float64).reshape(groups, per) + mean_d - mean_c).ravel().astype(np.float32)


def conv_geometry(kernel: Sequence[int], stride: Sequence[int] = (1, 1), pad: Sequence[int] = (0, 0),
                  dilation: Sequence[int] = (1, 1), group: int = 1) -> Geometry:
    pair = lambda v: (int(v[0]), int(v[-1])) if len(v) else None
    return Geometry(pair(kernel), pair(stride) or (1, 1), pair(pad) or (0, 0), pair(dilation) or (1, 1), int(group))


def deconvolution(kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int], dilation: Sequence[int],
                  group: int = 1) -> Optional[Geometry]:
    """A Deconvolution as the convolution it equals, or None where there is none without cropping.

    Caffe's Deconvolution adds ``x[c, i] * w[c, o, k]`` into output ``stride * i - pad + dilation * k``.
    That is a stride-1 convolution of the input with ``stride - 1`` zeros between its pixels, padded
    by ``dilation * (kernel - 1) - pad``, with the kernel flipped and its two channel axes swapped
    (``as_convolution``); a pad larger than that would crop, which no padding expresses."""
    p = tuple(int(d) * (int(k) - 1) - int(q) for k, q, d in zip(kernel, pad, dilation))
    if min(p) < 0:
        return None
    return Geometry(tuple(kernel), (1, 1), p, tuple(dilation), int(group), upsample=tuple(stride))


def as_convolution(w: np.ndarray, group: int) -> np.ndarray:
    """A Deconvolution's weights (in, out / group, kh, kw) as its convolution's (out, in / group, kh, kw)."""
    cin, per, kh, kw = w.shape
    v = w.reshape(group, cin // group, per, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(v.reshape(group * per, cin // group, kh, kw)[:, :, ::-1, ::-1])


def from_convolution(wc: np.ndarray, group: int) -> np.ndarray:
    """``as_convolution`` undone."""
    cout, per, kh, kw = wc.shape
    v = wc[:, :, ::-1, ::-1].reshape(group, cout // group, per, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(v.reshape(group * per, cout // group, kh, kw))


def rows_per_image(g: Geometry, shape: Sequence[int]) -> int:
    """How many patch rows one image of input ``shape`` (C, H, W) gives."""
    if g.fc:
        return 1
    h, w = ((int(v) - 1) * u + 1 for v, u in zip(shape[-2:], g.upsample))
    return out_size(h, g.kernel[0], g.stride[0], g.pad[0], g.dilation[0]) * \
        out_size(w, g.kernel[1], g.stride[1], g.pad[1], g.dilation[1])

