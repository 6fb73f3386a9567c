"""Pruning and k-means weight sharing (the compressor's first two stages)."""
import numpy as np
import pytest

from dcrt.compressor import (init_centroids, kmeans_1d, prune, prune_density, prune_threshold, quantize_layer)
from dcrt import zoo


def test_linear_init_spans_min_max(rng):
    w = rng.standard_normal(1000)
    c = init_centroids(w, 7, "linear")
    np.testing.assert_allclose(c, np.linspace(w.min(), w.max(), 7))


def test_density_init_follows_the_cdf(rng):
    w = np.concatenate([rng.normal(-1, 0.05, 5000), rng.normal(1, 0.05, 5000)])  # bimodal, like pruned weights
    c = init_centroids(w, 8, "density")
    cdf = np.searchsorted(np.sort(w), c) / w.size
    np.testing.assert_allclose(cdf, (np.arange(8) + 0.5) / 8, atol=0.01)
    assert (np.abs(np.abs(c) - 1) < 0.2).all()  # denser around the two peaks


def test_random_init_picks_observations_reproducibly(rng):
    w = rng.standard_normal(500)
    c1, c2 = init_centroids(w, 9, "random", seed=3), init_centroids(w, 9, "random", seed=3)
    np.testing.assert_array_equal(c1, c2)
    assert np.isin(c1, w).all()
    assert not np.array_equal(c1, init_centroids(w, 9, "random", seed=4))


def test_unknown_init():
    with pytest.raises(ValueError, match="unknown init"):
        init_centroids(np.ones(3), 2, "kmeans++")


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_converges_and_labels_are_nearest(rng, init):
    w = np.concatenate([rng.normal(-0.3, 0.05, 3000), rng.normal(0.2, 0.08, 3000)])
    c, labels = kmeans_1d(w, 15, init, seed=1)
    assert np.all(np.diff(c) >= 0)
    nearest = np.abs(w[:, None] - c[None, :].astype(np.float64)).argmin(axis=1)
    assert (c[labels] == c[nearest]).all()  # ties between equal centroids allowed
    c0 = init_centroids(w, 15, init, seed=1)
    wcss = lambda cent: ((w - cent[np.abs(w[:, None] - cent[None]).argmin(1)]) ** 2).sum()  # noqa: E731
    assert wcss(c.astype(np.float64)) <= wcss(c0) + 1e-9
    # a Lloyd fixed point: every non-empty centroid is its cluster's mean
    for k in np.unique(labels):
        assert abs(w[labels == k].mean() - c[k]) < 1e-5


def test_kmeans_fewer_values_than_clusters():
    c, labels = kmeans_1d(np.array([1.0, 1.0, 2.0]), 8)
    assert set(c[labels]) == {1.0, 2.0}


def test_quantize_reserves_code_zero(rng):
    w = rng.standard_normal((40, 30)).astype(np.float32)
    mask = prune_density(w, 0.25)
    q = quantize_layer(w, mask, 4)
    assert q.codebook[0] == 0 and q.codebook.size == 16
    assert (q.codes[~mask] == 0).all() and (q.codes[mask] >= 1).all()
    err = np.abs(q.dequantize()[mask] - w[mask])
    assert err.max() < (w.max() - w.min()) / 15  # within one linear-init bin


def test_prune_density_exact_count_and_largest(rng):
    w = rng.standard_normal((100, 37))
    m = prune_density(w, 0.13)
    assert m.sum() == round(0.13 * w.size)
    assert np.abs(w[m]).min() >= np.abs(w[~m]).max()


def test_prune_density_ties_keep_lowest_index():
    w = np.array([1.0, 2.0, 2.0, 2.0, 0.5])
    assert list(prune_density(w, 0.4)) == [False, True, True, False, False]


def test_prune_threshold_is_quality_times_std(rng):
    w = rng.standard_normal(10_000)
    m = prune_threshold(w, 1.0)
    np.testing.assert_array_equal(m, np.abs(w) > w.std())


def test_prune_per_layer_settings():
    model = zoo.lenet_300_100()
    masks = prune(model, density={"ip1": 0.1}, quality=None)
    assert abs(masks["ip1"].mean() - 0.1) < 1e-3 and masks["ip2"].all()
    with pytest.raises(ValueError, match="not both"):
        prune(model, density=0.1, quality=1.0)
