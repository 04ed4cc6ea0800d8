"""Average-linkage agglomerative clustering on cosine distance; new images go to the most similar centroid."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from anomaly_clustering.interfaces import Clusterer
from anomaly_clustering.records import Clustering, Embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CosineAgglomerative(Clusterer):
    """Average-linkage clustering on cosine distance (ACME example plugin).

    Args:
        n_clusters: number of clusters (set by the pipeline from --n_clusters).
    """

    def __init__(self, n_clusters: int = 2):
        self.n_clusters = n_clusters

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        x = _unit(embeddings.image_vectors().astype(np.float64))
        labels = AgglomerativeClustering(self.n_clusters, metric="cosine", linkage="average").fit_predict(x)
        self.centroids_ = _unit(np.stack([x[labels == k].mean(0) for k in range(self.n_clusters)]))
        return Clustering(labels, self.n_clusters)

    def predict(self, embeddings: Embeddings) -> Clustering:
        x = _unit(embeddings.image_vectors().astype(np.float64))
        return Clustering((x @ self.centroids_.T).argmax(1), self.n_clusters)
