"""Layer-wise reconstruction (algorithms/reconstruction.py) on synthetic data, checked against explicit algebra."""
import numpy as np
import pytest

from caffe_dc.algorithms import reconstruction as rc


def _naive_conv(x, w, g: rc.Geometry):
    """Caffe's convolution by loops: (N, C, H, W) * (O, C/group, kh, kw) -> (N, O, Ho, Wo)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.pad, g.dilation
    ho, wo = rc.out_size(h, kh, sh, ph, dh), rc.out_size(wd, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cg, og = c // g.group, o // g.group
    y = np.zeros((n, o, ho, wo))
    for oc in range(o):
        grp = oc // og
        for i in range(ho):
            for j in range(wo):
                win = xp[:, grp * cg:(grp + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                         j * sw:j * sw + dw * (kw - 1) + 1:dw]
                y[:, oc, i, j] = (win * w[oc]).sum(axis=(1, 2, 3))
    return y


GEOMETRIES = [rc.conv_geometry((3, 3)), rc.conv_geometry((3, 2), (2, 1), (1, 0), (1, 2), 1),
              rc.conv_geometry((3, 3), (1, 1), (2, 2), (2, 2), 2), rc.conv_geometry((1, 1), group=3)]


@pytest.mark.parametrize("g", GEOMETRIES)
def test_im2col_times_weights_is_caffes_convolution(g):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 9, 8))
    w = rng.normal(size=(6, 6 // g.group) + g.kernel)
    cols = rc.im2col(x, g)                                     # (group, N*Ho*Wo, C/g*kh*kw)
    og = w.shape[0] // g.group
    y = np.concatenate([cols[k] @ w[k * og:(k + 1) * og].reshape(og, -1).T for k in range(g.group)], axis=1)
    ref = _naive_conv(x, w, g)
    assert y.shape[0] == ref.shape[0] * ref.shape[2] * ref.shape[3]
    np.testing.assert_allclose(y, ref.transpose(0, 2, 3, 1).reshape(-1, w.shape[0]), atol=1e-10)
    assert rc.rows_per_image(g, x.shape[1:]) * x.shape[0] == y.shape[0]


def _naive_deconv(x, w, stride, pad, dilation, group):
    """Caffe's Deconvolution by its definition: x[c, i] * w[c, o, k] added into output stride * i - pad + dilation * k."""
    n, c, h, wd = x.shape
    per, kh, kw = w.shape[1:]
    ho = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    wo = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    y = np.zeros((n, per * group, ho, wo))
    cg = c // group
    for ci in range(c):
        grp = ci // cg
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for b in range(kw):
                        yi, yj = stride[0] * i - pad[0] + dilation[0] * a, stride[1] * j - pad[1] + dilation[1] * b
                        if 0 <= yi < ho and 0 <= yj < wo:
                            y[:, grp * per:(grp + 1) * per, yi, yj] += x[:, ci, i, j, None] * w[ci, :, a, b]
    return y


@pytest.mark.parametrize("kernel,stride,pad,dilation,group", [((4, 4), (2, 2), (1, 1), (1, 1), 1),
                                                               ((3, 2), (3, 1), (0, 1), (1, 2), 2),
                                                               ((2, 2), (2, 2), (0, 0), (1, 1), 3)])
def test_a_deconvolution_is_the_convolution_its_geometry_and_weights_say(kernel, stride, pad, dilation, group):
    """A Deconvolution refits as a convolution of its zero-upsampled input (``rc.deconvolution``) with its
    weights flipped and their channel axes swapped (``as_convolution``); its output is Caffe's definition."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 4, 5))
    w = rng.normal(size=(6, 2) + kernel)                         # (in, out / group, kh, kw)
    g = rc.deconvolution(kernel, stride, pad, dilation, group)
    wc = rc.as_convolution(w, group)
    assert wc.shape == (2 * group, 6 // group) + kernel
    np.testing.assert_array_equal(rc.from_convolution(wc, group), w)
    cols = rc.im2col(x, g)
    og = wc.shape[0] // group
    y = np.concatenate([cols[k] @ wc[k * og:(k + 1) * og].reshape(og, -1).T for k in range(group)], axis=1)
    ref = _naive_deconv(x, w, stride, pad, dilation, group)
    np.testing.assert_allclose(y, ref.transpose(0, 2, 3, 1).reshape(-1, ref.shape[1]), atol=1e-10)
    assert rc.rows_per_image(g, x.shape[1:]) * x.shape[0] == y.shape[0]
    assert rc.deconvolution((3, 3), (2, 2), (3, 3), (1, 1)) is None     # a pad past the kernel crops


def test_refit_recovers_the_dense_outputs_exactly_when_the_support_can_carry_them():
    """Inputs of rank r: any r independent kept columns per channel reproduce the dense output exactly."""
    rng = np.random.default_rng(1)
    n, d, r, out = 400, 12, 4, 5
    z = rng.normal(size=(n, r))
    mix = rng.normal(size=(r, d))
    x = z @ mix
    w = rng.normal(size=(out, d))
    b = rng.normal(size=out)
    mask = np.zeros((out, d), bool)
    for o in range(out):
        mask[o, rng.choice(d, r, replace=False)] = True
    m = rc.Moments(rc.Geometry.dense())
    m.add(x[:150])
    m.add(x[150:])
    v, beta = rc.refit(m, w, b, mask, ridge=1e-12)
    assert np.all(v[~mask] == 0)
    y = x @ w.T + b
    np.testing.assert_allclose(x @ v.T.astype(np.float64) + beta, y, atol=1e-3 * np.abs(y).max())
    # the closed form: v_S = mix[:, S]^-1 mix w, the bias as it was
    for o in range(out):
        s = np.flatnonzero(mask[o])
        np.testing.assert_allclose(v[o, s], np.linalg.solve(mix[:, s], mix @ w[o]), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(beta, b, atol=1e-4)
    # magnitude pruning alone does not
    plain = np.where(mask, w, 0)
    assert np.abs(x @ plain.T + b - y).max() > 100 * np.abs(x @ v.T + beta - y).max()


@pytest.mark.parametrize("g", GEOMETRIES[1:3])
@pytest.mark.parametrize("share", [0.4, 0.85])   # solved on the kept support / on the pruned set
def test_refit_is_the_ridge_least_squares_solution_for_a_grouped_dilated_convolution(g, share):
    """Stationarity on the kept support: X_S^T (X_c v + beta - y) + lam (v - w_S) = 0, bias residual 0."""
    rng = np.random.default_rng(2)
    xd = rng.normal(size=(6, 6, 10, 9))
    xc = xd + 0.3 * rng.normal(size=xd.shape)          # the compressed prefix feeds a perturbed input
    w = rng.normal(size=(4, 6 // g.group) + g.kernel)
    b = rng.normal(size=4)
    mask = rng.random(w.shape) < share
    m = rc.Moments(g)
    m.add(xc, xd)
    ridge = 0.05
    v, beta = rc.refit(m, w, b, mask, ridge)
    pc, pd = rc.im2col(xc, g), rc.im2col(xd, g)
    og = 4 // g.group
    for o in range(4):
        k = o // og
        y = pd[k] @ w[o].ravel() + b[o]
        res = pc[k] @ v[o].ravel().astype(np.float64) + beta[o] - y
        lam = ridge * np.trace(pc[k].T @ pc[k]) / pc[k].shape[1]
        s = np.flatnonzero(mask[o].ravel())
        grad = pc[k][:, s].T @ res + lam * (v[o].ravel()[s] - w[o].ravel()[s])
        assert np.abs(grad).max() < 1e-3 * np.abs(pc[k][:, s].T @ y).max()
        assert abs(res.sum()) < 1e-3 * np.abs(y).sum()
        assert np.all(v[o][~mask[o]] == 0)


@pytest.mark.parametrize("bias", [True, False])
def test_moments_kept_for_the_dense_weights_and_summed_over_folds_give_the_same_refit(bias):
    """``Moments(g, weights)`` keeps X_c^T X_d w instead of X_c^T X_d, and ``Moments.total`` sums the
    folds' moments (the cross-fitting's fits): the refit is the one from every batch added in full."""
    g = GEOMETRIES[2]
    rng = np.random.default_rng(9)
    xd = rng.normal(size=(9, 6, 10, 9))
    xc = xd + 0.3 * rng.normal(size=xd.shape)
    w = rng.normal(size=(4, 6 // g.group) + g.kernel)
    b = rng.normal(size=4) if bias else None
    mask = rng.random(w.shape) < 0.5
    full = rc.Moments(g)
    full.add(xc, xd)
    folds = []
    for lo in (0, 4):
        f = rc.Moments(g, w.reshape(4, -1))
        f.add(xc[lo:lo + 4 + lo // 4], xd[lo:lo + 4 + lo // 4])
        folds.append(f)
    kept = rc.Moments.total(folds)
    assert kept.n == full.n and kept.cross.shape == (g.group, full.hc.shape[1], 4 // g.group)
    (v, beta), (v_full, beta_full) = rc.refit(kept, w, b, mask), rc.refit(full, w, b, mask)
    assert not np.allclose(v, np.where(mask, w, 0), atol=1e-2)      # refitted, not the pruned weights
    np.testing.assert_allclose(v, v_full, rtol=1e-4, atol=1e-5)
    if bias:
        np.testing.assert_allclose(beta, beta_full, rtol=1e-4, atol=1e-5)
    else:
        assert beta is None and beta_full is None
    np.testing.assert_allclose(rc.Moments.total([rc.Moments(g)] + folds[:1]).hc, folds[0].hc)
    with pytest.raises(ValueError, match="other dense weights"):
        rc.refit(kept, w + 1, b, mask)


def test_a_channel_with_too_few_rows_for_its_weights_keeps_its_pruned_dense_weights():
    """ROWS_PER_UNKNOWN rows a fitted weight: with 40 rows, a channel keeping 5 weights and its bias
    is refitted, one keeping 12 keeps its magnitude-pruned dense weights."""
    rng = np.random.default_rng(6)
    g = rc.Geometry.dense()
    xd = rng.normal(size=(40, 20))
    m = rc.Moments(g)
    m.add(xd + 0.3 * rng.normal(size=xd.shape), xd)
    assert m.n == 40 and 6 * rc.ROWS_PER_UNKNOWN <= 40 < 13 * rc.ROWS_PER_UNKNOWN
    w, b = rng.normal(size=(2, 20)), rng.normal(size=2)
    mask = np.zeros_like(w, bool)
    mask[0, :5] = mask[1, :12] = True
    v, beta = rc.refit(m, w, b, mask)
    assert not np.allclose(v[0], np.where(mask[0], w[0], 0)) and beta[0] != pytest.approx(b[0])
    np.testing.assert_array_equal(v[1], np.where(mask[1], w[1], 0).astype(np.float32))
    assert beta[1] == pytest.approx(b[1])


def test_refit_from_start_weights_keeps_them_where_it_cannot_fit_and_pulls_towards_them_where_it_does():
    """A later prune round: the target is still the dense layer's output, but a channel without rows enough
    keeps the start weights (retrained, not the dense ones), and the ridge pulls towards them; the solution
    is the explicit ridge least squares with the start as the prior."""
    rng = np.random.default_rng(8)
    xd = rng.normal(size=(40, 20))
    xc = xd + 0.3 * rng.normal(size=xd.shape)
    m = rc.Moments(rc.Geometry.dense())
    m.add(xc, xd)
    w, b = rng.normal(size=(2, 20)), rng.normal(size=2)
    w0, b0 = w + rng.normal(size=w.shape), b + 1.0
    mask = np.zeros_like(w, bool)
    mask[0, :5] = mask[1, :12] = True
    v, beta = rc.refit(m, w, b, mask, start=(w0, b0))
    np.testing.assert_array_equal(v[1], np.where(mask[1], w0[1], 0).astype(np.float32))
    assert beta[1] == pytest.approx(b0[1])
    lam = rc.RIDGE * np.trace(xc.T @ xc) / 20
    a = np.c_[xc[:, :5], np.ones(40)]
    penal = np.diag(np.r_[np.full(5, lam), 0.0])
    want = np.linalg.solve(a.T @ a + penal, a.T @ (xd @ w[0] + b[0]) + penal @ np.r_[w0[0, :5], 0.0])
    np.testing.assert_allclose(np.r_[v[0, :5], beta[0]], want, rtol=1e-4, atol=1e-5)
    # a ridge that dominates: the kept weights stay at the start's, not the dense ones
    v, _ = rc.refit(m, w, b, mask, ridge=1e9, start=(w0, b0))
    np.testing.assert_allclose(v[0, :5], w0[0, :5], rtol=1e-4)


def test_refit_without_bias_and_a_channel_with_nothing_kept():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6))
    w = rng.normal(size=(3, 6))
    mask = np.ones((3, 6), bool)
    mask[1] = False
    m = rc.Moments(rc.Geometry.dense())
    m.add(x)
    v, beta = rc.refit(m, w, None, mask, ridge=1e-9)
    assert beta is None
    np.testing.assert_allclose(v[[0, 2]], w[[0, 2]], rtol=1e-4, atol=1e-5)   # full support: nothing to change
    assert np.all(v[1] == 0)


def test_bias_correction_zeroes_the_mean_output_error():
    rng = np.random.default_rng(4)
    xd = rng.normal(size=(2, 4, 7, 7)) + 0.5
    xc = xd * 0.9 + 0.1 * rng.normal(size=xd.shape)
    g = rc.conv_geometry((3, 3), pad=(1, 1), group=2)
    w = rng.normal(size=(6, 2, 3, 3))
    b = rng.normal(size=6)
    wq = np.round(w * 2) / 2                            # a coarse quantization
    m = rc.Moments(g)
    m.add(xc[:1], xd[:1])
    m.add(xc[1:], xd[1:])
    bq = rc.correct_bias(m, wq, w, b)
    yd, yc = _naive_conv(xd, w, g) + b[:, None, None], _naive_conv(xc, wq, g) + bq[:, None, None]
    np.testing.assert_allclose((yc - yd).mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.abs((_naive_conv(xc, wq, g) + b[:, None, None] - yd).mean(axis=(0, 2, 3))).max() > 1e-2


def test_output_error_of_the_moments_is_the_explicit_one():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 7))
    w, w2 = rng.normal(size=(2, 3, 7))
    b, b2 = rng.normal(size=(2, 3))
    m = rc.Moments(rc.Geometry.dense())
    m.add(x)
    np.testing.assert_allclose(m.output_error(w2, b2, w, b), ((x @ w2.T + b2 - x @ w.T - b) ** 2).mean(axis=0))


def test_refit_solves_in_chunks_as_at_once(monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 20))
    w = rng.normal(size=(9, 20))
    b = rng.normal(size=9)
    mask = rng.random(w.shape) < 0.5
    m = rc.Moments(rc.Geometry.dense())
    m.add(x)
    whole = rc.refit(m, w, b, mask)
    monkeypatch.setattr(rc, "SOLVE_BYTES", 1)
    parts = rc.refit(m, w, b, mask)
    np.testing.assert_allclose(whole[0], parts[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole[1], parts[1], rtol=1e-5, atol=1e-6)
