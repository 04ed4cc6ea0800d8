"""Ward (agglomerative), k-means, Gaussian mixture and spectral clustering, wrapping scikit-learn.

Ward and spectral clustering cannot label new points by themselves; ``predict`` assigns a new image to the nearest
cluster centroid (Euclidean, in the embedding space the clusters were formed in), which is what Ward's
variance criterion favours.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.mixture import GaussianMixture

from anomaly_clustering.interfaces import Clusterer
from anomaly_clustering.records import Clustering, Embeddings


def _check(x: np.ndarray, k: int) -> None:
    if k > len(x):
        raise ValueError(f"n_clusters={k} is more than the {len(x)} images")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain non-finite values")


class _CentroidPredict(Clusterer):
    def _remember(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.centroids_ = np.stack([x[labels == c].mean(0) if np.any(labels == c) else np.full(x.shape[1], np.inf) for c in range(self.n_clusters)])

    def predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        d = ((x[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        return Clustering(d.argmin(1), self.n_clusters, info={"assigned_by": "nearest centroid"})


class WardClusterer(_CentroidPredict):
    """Agglomerative clustering with Ward linkage (both papers' default); new images go to the nearest centroid."""

    def __init__(self, n_clusters: int = 2):
        self.n_clusters = n_clusters

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        labels = AgglomerativeClustering(n_clusters=self.n_clusters, linkage="ward").fit_predict(x)
        self._remember(x, labels)
        return Clustering(labels, self.n_clusters)


class KMeansClusterer(Clusterer):
    """k-means (scikit-learn, k-means++ initialisation, ``n_init`` restarts)."""

    def __init__(self, n_clusters: int = 2, n_init: int = 10, seed: int = 42):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        self.model_ = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.seed).fit(x)
        return Clustering(self.model_.labels_.copy(), self.n_clusters)

    def predict(self, embeddings: Embeddings) -> Clustering:
        return Clustering(self.model_.predict(embeddings.image_vectors().astype(np.float64)), self.n_clusters)


class GMMClusterer(Clusterer):
    """Gaussian mixture (scikit-learn; ``covariance_type`` full as in blind-lca's Table 4, diag for wide
    embeddings); gives per-image probabilities."""

    def __init__(self, n_clusters: int = 2, covariance_type: str = "full", reg_covar: float = 1e-4, seed: int = 42):
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        self.model_ = GaussianMixture(self.n_clusters, covariance_type=self.covariance_type, reg_covar=self.reg_covar, random_state=self.seed).fit(x)
        return Clustering(self.model_.predict(x), self.n_clusters, probabilities=self.model_.predict_proba(x))

    def predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        return Clustering(self.model_.predict(x), self.n_clusters, probabilities=self.model_.predict_proba(x))


class SpectralClusterer(_CentroidPredict):
    """Spectral clustering on a nearest-neighbour affinity graph (scikit-learn); new images go to the nearest
    centroid."""

    def __init__(self, n_clusters: int = 2, affinity: str = "nearest_neighbors", n_neighbors: int = 10, seed: int = 42):
        self.n_clusters = n_clusters
        self.affinity = affinity
        self.n_neighbors = n_neighbors
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        nn = min(self.n_neighbors, len(x) - 1)
        labels = SpectralClustering(self.n_clusters, affinity=self.affinity, n_neighbors=max(nn, 1), random_state=self.seed, assign_labels="cluster_qr").fit_predict(x)
        self._remember(x, labels)
        return Clustering(labels, self.n_clusters)
