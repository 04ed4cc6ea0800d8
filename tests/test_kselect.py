"""K estimation (``--n_clusters auto``): every estimator on well-separated blobs, the ``auto`` rule where most images
are one normal group (silhouette's failure), seeded estimators reproducible, Ward's tree cuts equal to the clusterer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from anomaly_clustering import registry
from anomaly_clustering.kselect import (
    AUTO_METHOD,
    ESTIMATORS,
    K_METHODS,
    eigengap_curve,
    estimate_k,
    method_label,
    select_n_clusters,
    sqrt_neighbours,
    ward_cuts,
)
from anomaly_clustering.records import Embeddings


def separated_blobs(n_blobs: int, seed: int = 0, dim: int = 6, per_blob: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """``n_blobs`` unit-variance blobs whose centres are ≥ 12 apart (a simplex scaled up)."""
    centres = np.eye(n_blobs, max(dim, n_blobs)) * 12.0
    x, y = make_blobs(n_samples=[per_blob] * n_blobs, centers=centres, cluster_std=1.0, random_state=seed)
    return x, y


def dominant_normal(seed: int, n_types: int = 4, n_normal: int = 150, per_type: int = 12, dim: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Most images one broad 'good' group; the defect types tight, close to each other and far from good: the
    coarsest split (good vs the rest) has the best mean silhouette, though the types are well separated."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((n_types + 1, dim))
    centres[1:, 0] = 15.0
    for t in range(n_types):
        centres[t + 1, 1 + t // 2] = 3.0 if t % 2 == 0 else -3.0
    sizes = [n_normal] + [per_type] * n_types
    spread = [2.0] + [0.5] * n_types
    x = np.concatenate([c + rng.normal(size=(m, dim)) * s for c, m, s in zip(centres, sizes, spread)])
    return x, np.repeat(np.arange(n_types + 1), sizes)


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
@pytest.mark.parametrize("n_blobs", [3, 5])
def test_every_estimator_recovers_k_on_separated_blobs(method, n_blobs):
    x, _ = separated_blobs(n_blobs)
    k, curve = estimate_k(x, 2, 8, method, seed=0)
    assert k == n_blobs, (method, curve)
    assert set(curve) <= set(range(2, 9)) and curve


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_finds_the_types_beside_a_dominant_normal_group(seed):
    x, y = dominant_normal(seed)
    assert estimate_k(x, 2, 10, "silhouette")[0] == 2  # the case that motivated the change
    k, _ = estimate_k(x, 2, 10, "auto", seed=seed)
    assert k == len(np.unique(y))


def test_select_n_clusters_auto_fits_the_clusterer_at_the_estimate():
    x, y = separated_blobs(4, seed=3)
    k, curve, fitted, result = select_n_clusters(registry.create("clusterer", "ward"), Embeddings.per_image(x), 2, 8, "auto")
    assert k == 4 and fitted.n_clusters == 4 and result.n_clusters == 4
    assert adjusted_rand_score(y, result.labels) == 1.0
    assert min(curve) >= 2 and max(curve) <= 8
    assert method_label("auto") == f"auto: {AUTO_METHOD}" and AUTO_METHOD in ESTIMATORS and "auto" in K_METHODS


@pytest.mark.parametrize("method", ["gap", "prediction-strength", "stability"])
def test_seeded_estimators_are_reproducible(method):
    x, _ = dominant_normal(0)
    assert estimate_k(x, 2, 6, method, seed=5) == estimate_k(x, 2, 6, method, seed=5)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="k_method 'elbow'"):
        estimate_k(separated_blobs(3)[0], 2, 5, "elbow")


def test_ward_cuts_are_the_ward_clusterers_partitions():
    x = np.random.default_rng(0).normal(size=(60, 5))
    cuts = ward_cuts(x, [2, 3, 5, 7])
    for k, labels in cuts.items():
        ref = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
        assert len(np.unique(labels)) == k and adjusted_rand_score(ref, labels) == 1.0


def test_sqrt_neighbours_grow_with_the_set_above_the_floor():
    assert [sqrt_neighbours(n) for n in (83, 625, 648, 1344, 2000)] == [10, 10, 10, 15, 18]
    assert sqrt_neighbours(6) == 5  # never as many neighbours as there are other images
    assert sqrt_neighbours(1344, min_neighbors=4, scale=0.0) == 4


def test_eigengap_knn_sqrt_is_the_knn_eigengap_on_the_scaled_graph():
    """Up to 625 images it is ``eigengap-knn`` (10 neighbours); above, the graph has round(0.4·√N) neighbours."""
    x, _ = separated_blobs(4, seed=1, per_blob=20)
    assert estimate_k(x, 2, 8, "eigengap-knn-sqrt") == estimate_k(x, 2, 8, "eigengap-knn")
    big = np.random.default_rng(0).normal(size=(900, 4))  # 0.4·√900 = 12 neighbours
    _, curve = estimate_k(big, 2, 6, "eigengap-knn-sqrt")
    assert curve == pytest.approx(eigengap_curve(big, 2, 6, 12))
    assert curve != pytest.approx(eigengap_curve(big, 2, 6, 10))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigengap_knn_sqrt_finds_the_types_beside_a_dominant_normal_group(seed):
    x, y = dominant_normal(seed)
    assert estimate_k(x, 2, 10, "eigengap-knn-sqrt", seed=seed)[0] == len(np.unique(y))


@pytest.mark.parametrize(("method", "options"), [
    ("eigengap-knn", {"n_neighbors": 0}), ("eigengap-knn", {"n_neighbors": 2.5}),
    ("eigengap-knn-sqrt", {"scale": -0.1}), ("eigengap-knn-sqrt", {"min_neighbors": 0}), ("eigengap-knn-sqrt", {"scale": float("nan")}),
])
def test_graph_options_are_validated(method, options):
    with pytest.raises(ValueError, match=method):
        estimate_k(separated_blobs(3)[0], 2, 5, method, **options)


def test_cluster_distinct_keeps_per_image_info_aligned_with_the_images_kept():
    """Copies of one picture are clustered once: the per-image ``info`` lists (image scores, the binarizer's verdict)
    must shrink with them, or a clusterer that reads them sees the wrong image's entry (a DeepPCB-suite failure)."""
    from anomaly_clustering.kselect import cluster_distinct
    from anomaly_clustering.records import Clustering

    digests = ["a", "b", "a", "c", "a", "d"]  # images 2 and 4 copy image 0
    images = type("Images", (), {"digests": digests, "__len__": lambda self: len(digests)})()
    x = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    emb = Embeddings.per_image(x, {"image_scores": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "has_region": [True, False, True, False, True, True], "views": ["v"]})
    seen = {}

    def cluster(e: Embeddings):
        seen.update(e.info)
        return Clustering(np.arange(e.n_images) % 2, 2)

    result = cluster_distinct(images, emb, cluster)
    assert seen["image_scores"] == [0.0, 1.0, 3.0, 5.0] and seen["has_region"] == [True, False, False, True]
    assert seen["views"] == ["v"]  # not per image: as it was
    assert result.labels.tolist() == [0, 1, 0, 0, 0, 1] and result.info["duplicates_merged"] == 2
