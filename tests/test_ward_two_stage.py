"""Two-stage Ward for large N: size-weighted Ward on micro-cluster centroids agrees with exact Ward."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from anomaly_clustering.plugins.common.clusterers import WardClusterer, weighted_ward
from anomaly_clustering.records import Embeddings


def test_weighted_ward_with_unit_sizes_is_exact_ward() -> None:
    x, _ = make_blobs(200, centers=5, n_features=6, cluster_std=3.0, random_state=3)
    exact = AgglomerativeClustering(5, linkage="ward").fit_predict(x)
    assert adjusted_rand_score(exact, weighted_ward(x, np.ones(len(x)), 5)) == 1.0


def test_weighted_ward_counts_group_sizes() -> None:
    # three groups on a line; the heavy pair merges first only because of the sizes
    centroids = np.array([[0.0], [1.0], [2.2]])
    assert weighted_ward(centroids, np.array([1.0, 1.0, 1.0]), 2).tolist() == [0, 0, 1]
    assert weighted_ward(centroids, np.array([50.0, 1.0, 1.0]), 2).tolist() == [0, 1, 1]


def test_two_stage_ward_agrees_with_exact_ward() -> None:
    x, _ = make_blobs(1500, centers=4, n_features=16, cluster_std=5.0, random_state=0)
    emb = Embeddings.per_image(x)
    exact = WardClusterer(4).fit_predict(emb)
    two = WardClusterer(4, max_exact=500, n_micro=300).fit_predict(emb)
    assert exact.info["ward"] == "exact" and two.info["ward"].startswith("two-stage")
    assert adjusted_rand_score(exact.labels, two.labels) > 0.9
    assert WardClusterer(4, max_exact=500, n_micro=300).fit_predict(emb).labels.tolist() == two.labels.tolist()
