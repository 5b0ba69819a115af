"""k-means codebooks, the quantized-layer invariants, and the group-by-index kernels."""
import warnings

import numpy as np
import pytest

from caffe_dc.algorithms import quantization as q
from caffe_dc.base.errors import InputError


def _layer(shape=(60, 50), zero_share=0.6, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    w[rng.random(shape) < zero_share] = 0.0
    return w


def _assert_valid_kmeans(values, k, c, labels):
    assert c.dtype == np.float32 and 1 <= c.size <= k
    assert np.isfinite(c).all() and (c != 0).all()
    assert (np.diff(c) > 0).all()                                  # ascending, distinct
    assert labels.shape == (np.asarray(values).size,)
    assert labels.min() >= 0 and labels.max() < c.size
    assert np.bincount(labels, minlength=c.size).min() >= 1        # every centroid used
    d = np.abs(np.asarray(values, np.float64)[:, None] - c.astype(np.float64)[None, :])
    np.testing.assert_allclose(d[np.arange(labels.size), labels], d.min(axis=1), rtol=0, atol=0)  # nearest


# --- initialisation -----------------------------------------------------------

def test_linear_init_is_evenly_spaced_from_min_to_max():
    v = np.array([0.7, -0.3, 0.1, 0.05, -0.2, 0.69], dtype=np.float32)
    c = q.init_centroids(v, 5, q.Init.LINEAR)
    lo, hi = float(np.float32(-0.3)), float(np.float32(0.7))
    np.testing.assert_array_equal(c, np.linspace(lo, hi, 5))
    assert c[0] == lo and c[-1] == hi
    np.testing.assert_allclose(np.diff(c), (hi - lo) / 4)


def test_quantize_layer_linear_init_uses_min_max_of_nonzero_weights():
    # Three tight groups at -0.3, 0.2, 0.7 (exactly the 3 linear points of their min..max):
    # k-means starting from there stays at the group means.
    rng = np.random.default_rng(3)
    groups = np.array([-0.3, 0.2, 0.7])
    v = (np.repeat(groups, 50) + rng.uniform(-1e-3, 1e-3, 150)).astype(np.float32)
    v[[0, 50, 100]] = [-0.3 - 1e-3, 0.2, 0.7 + 1e-3]
    w = np.concatenate([v, np.zeros(100, np.float32)])        # many zeros: they must not pull the min/max
    cb, codes = q.quantize_layer(w, 2)                          # 3 centroids for the nonzero weights
    np.testing.assert_allclose(cb[1:], [v[:50].mean(), v[50:100].mean(), v[100:].mean()], rtol=1e-5)
    assert (codes[:50] == 1).all() and (codes[50:100] == 2).all() and (codes[100:150] == 3).all()


def test_density_and_random_init():
    v = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    c = q.init_centroids(v, 4, q.Init.DENSITY)
    np.testing.assert_allclose(c, np.quantile(v.astype(np.float64), [0.125, 0.375, 0.625, 0.875]))
    r1 = q.init_centroids(v, 8, q.Init.RANDOM, seed=1)
    assert r1.size == 8 and np.unique(r1).size == 8 and np.isin(r1, v.astype(np.float64)).all()
    np.testing.assert_array_equal(r1, q.init_centroids(v, 8, "random", seed=1))
    assert not np.array_equal(r1, q.init_centroids(v, 8, q.Init.RANDOM, seed=2))
    assert q.init_centroids([1.0, 1.0, 2.0], 5, q.Init.RANDOM).tolist() == [1.0, 2.0]


def test_init_parse():
    assert q.Init.parse("LINEAR") is q.Init.LINEAR and q.Init.parse(q.Init.DENSITY) is q.Init.DENSITY
    with pytest.raises(InputError, match="linear, density, random"):
        q.Init.parse("kmeans++")


# --- kmeans edge cases --------------------------------------------------------

@pytest.mark.parametrize("init", list(q.Init))
def test_kmeans_every_k_from_1_to_n(init):
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 12):
        v = rng.standard_normal(n).astype(np.float32)
        for k in range(1, n + 1):
            c, labels = q.kmeans(v, k, init, seed=k)
            _assert_valid_kmeans(v, k, c, labels)
            if k == n:                                    # as many clusters as points: exact
                np.testing.assert_array_equal(c, np.sort(v))


def test_kmeans_constant_layer():
    v = np.full(1000, 0.25, np.float32)
    for init in q.Init:
        c, labels = q.kmeans(v, 31, init)
        assert c.tolist() == [0.25] and (labels == 0).all()
    cb, codes = q.quantize_layer(v.reshape(10, 100), 5)
    assert cb[0] == 0 and (cb[1:] == 0.25).all() and (codes == 1).all()


def test_kmeans_k_above_distinct_values():
    v = np.array([1, 1, 2, 2, 2, 3, 1], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # and no sklearn warning leaks
        c, labels = q.kmeans(v, 10, q.Init.LINEAR)
    assert c.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(c[labels], v)


def test_kmeans_forced_empty_clusters_give_finite_used_centroids():
    # Data only near -1 and +1; linear init puts centroids at -.5, 0, .5 which start empty,
    # and heavy duplicates make sklearn's "fewer distinct clusters" case likely.
    rng = np.random.default_rng(0)
    v = np.concatenate([np.full(500, -1.0), np.full(500, 1.0), -1 + rng.uniform(0, 1e-3, 3),
                        1 - rng.uniform(0, 1e-3, 3)]).astype(np.float32)
    for init in q.Init:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            c, labels = q.kmeans(v, 7, init, seed=0)
        _assert_valid_kmeans(v, 7, c, labels)


def test_finish_drops_nan_and_unused_centres():
    distinct = np.array([-1.0, 0.5, 2.0], np.float32)
    c, labels = q._finish(distinct, [np.nan, -1.0, 0.5, 2.0, 50.0, np.inf])
    assert c.tolist() == [-1.0, 0.5, 2.0] and labels.tolist() == [0, 1, 2]


def test_kmeans_centroid_at_zero_is_nudged():
    v = np.array([-1.0, 1.0, -1.0, 1.0], np.float32)           # one cluster: mean exactly 0
    c, labels = q.kmeans(v, 1, q.Init.LINEAR)
    assert c.tolist() == [q.NONZERO_EPS] and c[0] != 0 and (labels == 0).all()
    c, _ = q.kmeans(np.array([0.0, 3.0], np.float32), 2)       # a 0.0 in the data itself
    assert c.tolist() == [q.NONZERO_EPS, 3.0]


def test_kmeans_bad_input():
    with pytest.raises(InputError):
        q.kmeans([1.0, np.nan], 2)
    for k in (0, -1, 2.5, True):
        with pytest.raises(InputError):
            q.kmeans([1.0, 2.0], k)
    c, labels = q.kmeans(np.zeros(0, np.float32), 4)
    assert c.size == 0 and labels.size == 0


def _sklearn_algorithm():
    import sklearn

    return "lloyd" if tuple(int(x) for x in sklearn.__version__.split(".")[:2]) >= (1, 1) else "full"


def test_kmeans_on_distinct_values_matches_sklearn_on_raw_weights():
    """Fitting distinct values weighted by their counts is the same k-means run as on the raw weights."""
    pytest.importorskip("sklearn")
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(2)
    v = np.round(rng.standard_normal(3000), 2).astype(np.float32)     # many repeated values
    c, labels = q.kmeans(v, 6, q.Init.LINEAR)
    x = v.astype(np.float64).reshape(-1, 1)
    init = np.linspace(x.min(), x.max(), 6).reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = KMeans(6, init=init, n_init=1, algorithm=_sklearn_algorithm(), tol=q.KMEANS_TOL).fit(x).labels_
    means = np.array([x[raw == i].mean() for i in range(6)])
    np.testing.assert_allclose(c, means, rtol=1e-6)                    # centroids: the raw clusters' means
    _assert_valid_kmeans(v, 6, c, labels)


def _kmeans_sklearn(values, k, init=q.Init.LINEAR, seed=0):
    """``quantization.kmeans`` as it was on scikit-learn, before ``lloyd_1d`` replaced it."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    v = np.asarray(values, np.float32)
    distinct, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    d64 = distinct.astype(np.float64)
    start = q._top_up(q.init_centroids(v, k, init, seed), d64, k)
    tol = q.KMEANS_TOL * float(np.var(v, dtype=np.float64)) / float(np.var(d64))
    w = counts.astype(np.float64)
    km = KMeans(n_clusters=k, init=start.reshape(-1, 1), n_init=1, algorithm=_sklearn_algorithm(), tol=tol,
                max_iter=q.KMEANS_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(d64.reshape(-1, 1), sample_weight=w)
    lab = km.labels_
    cnt = np.bincount(lab, weights=w, minlength=k)
    centres = km.cluster_centers_.ravel().astype(np.float64)
    full = cnt > 0
    centres[full] = np.bincount(lab, weights=w * d64, minlength=k)[full] / cnt[full]
    c, labels = q._finish(distinct, centres)
    return c, labels[inverse]


def _inertia(v, c, labels):
    return float(((v.astype(np.float64) - c[labels].astype(np.float64)) ** 2).sum())


def _pruned_laplace(n, density, seed):
    """Nonzero weights of a magnitude-pruned layer of Laplace weights (what a trained layer looks like)."""
    w = (np.random.default_rng(seed).laplace(size=n) * 0.02).astype(np.float32)
    return w[np.abs(w) >= np.quantile(np.abs(w), 1 - density)]


@pytest.mark.parametrize("n,density,bits", [(20000, 1.0, 8), (60000, 0.1, 4), (40000, 0.3, 5), (5000, 1.0, 8),
                                            (30000, 0.5, 2)])
def test_kmeans_quality_equals_the_sklearn_based_quantizer(n, density, bits):
    """lloyd_1d is a faster route to the same clustering: inertia within 0.1% of the sklearn run's, and on
    float32 weights with extended-precision sums and the image's scikit-learn, the very same codebook."""
    sklearn = pytest.importorskip("sklearn")
    v = _pruned_laplace(n, density, seed=bits)
    k = (1 << bits) - 1
    for init in q.Init:
        c, labels = q.kmeans(v, k, init, seed=3)
        c_ref, labels_ref = _kmeans_sklearn(v, k, init, seed=3)
        _assert_valid_kmeans(v, k, c, labels)
        assert abs(_inertia(v, c, labels) / _inertia(v, c_ref, labels_ref) - 1) <= 1e-3, init
        if sklearn.__version__.startswith("0.23") and np.finfo(np.longdouble).nmant >= 63:
            np.testing.assert_array_equal(c, c_ref)
            np.testing.assert_array_equal(labels, labels_ref)


def test_lloyd_1d_edge_cases():
    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0])
    w = np.ones(5)
    # one centre: the weighted mean, every point in it
    c, lab = q.lloyd_1d(x, w, np.array([5.0]), 0.0, 10)
    assert lab.tolist() == [0] * 5 and c[0] == pytest.approx(4.8)
    # equal centres: the lower id takes the points (an argmin over ids), the other is relocated
    c, lab = q.lloyd_1d(x, w, np.array([1.0, 1.0, 10.5]), 0.0, 1)
    assert sorted(set(lab.tolist())) == [0, 1, 2]
    # max_iter reached: labels are those of the returned centres
    c, lab = q.lloyd_1d(x, np.array([1, 1, 1, 1, 50.0]), np.array([0.0, 1.0, 2.0]), 0.0, 1)
    assert (np.abs(x[:, None] - c[None, :]).argmin(axis=1) == lab).all()


def test_argsort_float32():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(5000).astype(np.float32) * 1e3, [np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45],
                        np.repeat(np.float32(0.5), 7)]).astype(np.float32)
    rng.shuffle(v)
    order = q.argsort_float32(v)
    np.testing.assert_array_equal(v[order], np.sort(v))
    assert np.array_equal(np.sort(order), np.arange(v.size))
    assert q.argsort_float32(np.zeros(0, np.float32)).size == 0


# --- quantize_layer -----------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 9])
@pytest.mark.parametrize("init", list(q.Init))
def test_quantize_layer_invariants(bits, init):
    w = _layer()
    cb, codes = q.quantize_layer(w, bits, init=init, seed=4)
    K = 2 ** bits
    assert cb.dtype == np.float32 and cb.shape == (K,)
    assert cb[0] == 0.0 and (cb[1:] != 0).all() and (np.diff(cb[1:]) >= 0).all()
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16) and codes.shape == w.shape
    wq = cb[codes]
    assert wq.dtype == np.float32
    np.testing.assert_array_equal(codes == 0, w == 0)                  # zeros stay zero, only they
    np.testing.assert_array_equal(wq == 0, w == 0)
    assert np.unique(wq).size <= K
    # every kept weight sits on its nearest centroid
    d = np.abs(w[w != 0].astype(np.float64)[:, None] - cb[1:].astype(np.float64)[None, :])
    np.testing.assert_array_equal(d[np.arange(d.shape[0]), codes[w != 0] - 1], d.min(axis=1))
    # deterministic
    cb2, codes2 = q.quantize_layer(w, bits, init=init, seed=4)
    np.testing.assert_array_equal(cb, cb2)
    np.testing.assert_array_equal(codes, codes2)


def test_quantize_layer_is_idempotent():
    cb, codes = q.quantize_layer(_layer(), 4)
    cb2, codes2 = q.quantize_layer(cb[codes], 4)
    np.testing.assert_array_equal(cb2[codes2], cb[codes])


def test_quantize_layer_all_zero_and_bad_input():
    cb, codes = q.quantize_layer(np.zeros((3, 4), np.float32), 3)
    assert cb[0] == 0 and (cb[1:] != 0).all() and (codes == 0).all()
    w = _layer((4, 4))
    w[0, 0] = np.inf
    with pytest.raises(InputError):
        q.quantize_layer(w, 4)
    for bits in (0, 17, 4.0, None):
        with pytest.raises(InputError):
            q.quantize_layer(_layer((4, 4)), bits)


# --- fine-tuning kernels ------------------------------------------------------

def _naive_group(diff, codes, K):
    sums = np.zeros(K)
    for d, c in zip(diff, codes):
        sums[c] += d
    sums[0] = 0.0
    return sums, np.array([sums[c] for c in codes])


def test_grouped_diff_matches_naive_loop():
    rng = np.random.default_rng(7)
    K = 16
    codes = rng.integers(0, K, 2000)
    codes[rng.random(2000) < 0.5] = 0
    diff = rng.standard_normal(2000).astype(np.float32)
    sums, per_weight = _naive_group(diff, codes, K)
    kernel = q.GroupedDiff(codes.astype(np.uint8), K)
    np.testing.assert_allclose(kernel.centroid_gradients(diff), sums, rtol=1e-12, atol=1e-12)
    g = diff.copy()
    assert kernel(g) is g                              # in place
    assert g.dtype == np.float32 and g.shape == diff.shape
    np.testing.assert_allclose(g, per_weight, rtol=1e-6, atol=1e-6)
    assert (g[codes == 0] == 0).all()
    for k in range(1, K):                              # equal codes -> identical diffs
        assert np.unique(g[codes == k]).size <= 1
    g2 = diff.copy()
    q.GroupedDiff(codes.astype(np.intp), K)(g2)        # the code dtype does not matter
    np.testing.assert_array_equal(g2, g)


def test_grouped_diff_mean_divides_each_sum_by_its_cluster_size():
    rng = np.random.default_rng(8)
    K = 8
    codes = rng.integers(0, K, 500)
    codes[:40] = 0
    codes[codes == 5] = 4                              # an empty cluster must not divide by zero
    diff = rng.standard_normal(500).astype(np.float32)
    sums, _ = _naive_group(diff, codes, K)
    means = np.array([sums[k] / max(int((codes == k).sum()), 1) for k in range(K)])
    means[0] = 0.0
    kernel = q.GroupedDiff(codes, K, q.CentroidGrad.parse("MEAN"))
    np.testing.assert_allclose(kernel.centroid_gradients(diff), means, rtol=1e-12, atol=1e-12)
    g = kernel(diff.copy())
    np.testing.assert_allclose(g, means[codes].astype(np.float32), rtol=1e-6, atol=1e-7)
    assert q.GroupedDiff(codes, K).reduce is q.CentroidGrad.SUM    # the paper's rule is the default
    with pytest.raises(InputError):
        q.CentroidGrad.parse("median")


def test_grouped_diff_rejects_codes_past_codebook():
    with pytest.raises(ValueError):
        q.GroupedDiff(np.array([0, 1, 4]), 4)


def test_compression_rate():
    # the paper's Figure 3: 16 weights, 4 clusters, 32-bit -> 16*32 / (16*2 + 4*32) = 3.2
    assert q.compression_rate(16, 32, 4) == pytest.approx(3.2)
    assert q.compression_rate(1000, 32, 16) == pytest.approx(32000 / (4000 + 512))
    with pytest.raises(InputError):
        q.compression_rate(0, 32, 4)
