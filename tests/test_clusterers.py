"""The built-in clusterers on well-separated blobs, predict on new points, and K estimation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from anomaly_clustering import registry
from anomaly_clustering.kselect import eigengap_curve, select_n_clusters
from anomaly_clustering.records import Clustering, Embeddings

CENTERS = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n_samples=n, centers=CENTERS, cluster_std=0.5, random_state=seed)
    return x.astype(np.float32), y


@pytest.mark.parametrize("name", ["ward", "agglomerative", "kmeans", "gmm", "spectral"])
def test_clusterer_recovers_blobs_and_predicts(name):
    x, y = blobs(48, seed=0)
    clu = registry.create("clusterer", name, n_clusters=4)
    result = clu.fit_predict(Embeddings.per_image(x))
    assert isinstance(result, Clustering) and result.n_clusters == 4
    assert result.labels.shape == (48,)
    assert adjusted_rand_score(y, result.labels) == 1.0
    # new points from the same blobs land in the cluster of their blob
    x_new, y_new = blobs(20, seed=1)
    pred = clu.predict(Embeddings.per_image(x_new))
    assert pred.labels.shape == (20,)
    fit_cluster_of_blob = {int(b): int(np.bincount(result.labels[y == b]).argmax()) for b in range(4)}
    assert [fit_cluster_of_blob[int(b)] for b in y_new] == pred.labels.tolist()
    # parameters round-trip through sklearn's clone
    assert clone(clu).get_params() == clu.get_params()


def test_gmm_gives_probabilities():
    x, _ = blobs(40, seed=2)
    res = registry.create("clusterer", "gmm", n_clusters=4).fit_predict(Embeddings.per_image(x))
    assert res.probabilities.shape == (40, 4)
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0, atol=1e-6)


def test_region_embeddings_are_merged_per_image():
    # two rows per image (regions) whose weighted mean is the image's blob centre
    x, y = blobs(24, seed=3)
    rows = np.concatenate([x + 0.1, x - 0.1])
    emb = Embeddings(rows, np.concatenate([np.arange(24), np.arange(24)]), 24, np.ones(48, np.float32))
    np.testing.assert_allclose(emb.image_vectors(), x, atol=1e-5)
    res = registry.create("clusterer", "ward", n_clusters=4).fit_predict(emb)
    assert res.labels.shape == (24,) and adjusted_rand_score(y, res.labels) == 1.0


def test_too_many_clusters_is_an_error():
    x, _ = blobs(5, seed=0)
    with pytest.raises(ValueError, match="more than the 5 images"):
        registry.create("clusterer", "ward", n_clusters=6).fit_predict(Embeddings.per_image(x))


@pytest.mark.parametrize("method", ["silhouette", "eigengap"])
@pytest.mark.parametrize("n_blobs", [3, 4])
def test_k_auto_finds_number_of_blobs(method, n_blobs):
    x, y = make_blobs(n_samples=40, centers=CENTERS[:n_blobs], cluster_std=0.5, random_state=4)
    k, curve, fitted, result = select_n_clusters(registry.create("clusterer", "ward"), Embeddings.per_image(x), 2, 8, method)
    assert k == n_blobs
    assert set(curve) == set(range(2, 9))
    assert max(curve, key=curve.get) == n_blobs
    assert fitted.n_clusters == n_blobs and adjusted_rand_score(y, result.labels) == 1.0


def test_k_auto_limits():
    x, _ = blobs(4, seed=0)
    k, curve, _, _ = select_n_clusters(registry.create("clusterer", "kmeans"), Embeddings.per_image(x), 2, 10)
    assert max(curve) == 3  # capped at N − 1
    with pytest.raises(ValueError, match="give --n_clusters"):
        select_n_clusters(registry.create("clusterer", "kmeans"), Embeddings.per_image(x[:2]), 2, 10)
    with pytest.raises(ValueError, match="k_method"):
        select_n_clusters(registry.create("clusterer", "kmeans"), Embeddings.per_image(blobs(12, 0)[0]), 2, 4, "elbow")


def test_eigengap_curve_peaks_at_number_of_components():
    x, _ = make_blobs(n_samples=30, centers=CENTERS[:3], cluster_std=0.3, random_state=0)
    curve = eigengap_curve(x, 2, 6)
    assert max(curve, key=curve.get) == 3


@pytest.mark.parametrize("backend", ["minibatch", "faiss"])
def test_large_n_kmeans_backends_agree_with_exact_kmeans(backend):
    """The k-means backends for large N (faiss, mini-batch) give the same partition as scikit-learn's KMeans."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    x, y = make_blobs(n_samples=3000, centers=5, n_features=16, cluster_std=1.0, random_state=1)
    emb = Embeddings.per_image(x.astype(np.float32))
    exact = registry.create("clusterer", "kmeans", n_clusters=5, backend="sklearn").fit_predict(emb)
    large = registry.create("clusterer", "kmeans", n_clusters=5, backend=backend)
    result = large.fit_predict(emb)
    assert result.info["backend"] == backend
    assert adjusted_rand_score(exact.labels, result.labels) > 0.95
    assert adjusted_rand_score(y, result.labels) > 0.95
    np.testing.assert_array_equal(large.predict(emb).labels, result.labels)


def test_kmeans_switches_backend_beyond_max_exact():
    x, _ = make_blobs(n_samples=300, centers=3, n_features=4, random_state=0)
    emb = Embeddings.per_image(x)
    clu = registry.create("clusterer", "kmeans", n_clusters=3, max_exact=100)
    assert clu.fit_predict(emb).info["backend"] in ("faiss", "minibatch")
    assert registry.create("clusterer", "kmeans", n_clusters=3).fit_predict(emb).info["backend"] == "sklearn"
    with pytest.raises(ValueError, match="backend"):
        registry.create("clusterer", "kmeans", n_clusters=3, backend="cuml").fit_predict(emb)


def test_agglomerative_single_linkage_follows_bands_where_ward_cuts_across():
    """Two long thin parallel bands: single linkage keeps each band whole where Ward cuts across them,
    and a bad linkage name is a clear error."""
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 30, 200)
    x = np.c_[t, np.where(np.arange(200) < 100, 0.0, 3.0) + rng.normal(0, 0.2, 200)].astype(np.float32)
    y = (np.arange(200) >= 100).astype(int)
    single = registry.create("clusterer", "agglomerative", n_clusters=2, linkage="single").fit_predict(Embeddings.per_image(x))
    ward = registry.create("clusterer", "ward", n_clusters=2).fit_predict(Embeddings.per_image(x))
    assert adjusted_rand_score(y, single.labels) == 1.0 and adjusted_rand_score(y, ward.labels) < 0.5
    with pytest.raises(ValueError, match="linkage=.median. is invalid"):
        registry.create("clusterer", "agglomerative", n_clusters=2, linkage="median").fit_predict(Embeddings.per_image(x))
