"""Ward and other agglomerative linkages, k-means, Gaussian mixture and spectral clustering, wrapping scikit-learn.

Ward and spectral clustering cannot label new points by themselves; ``predict`` assigns a new image to the nearest
cluster centroid (Euclidean, in the embedding space the clusters were formed in), which is what Ward's
variance criterion favours.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.mixture import GaussianMixture

from anomaly_clustering.features_ops import nearest_centroid
from anomaly_clustering.interfaces import Clusterer
from anomaly_clustering.records import Clustering, Embeddings
from anomaly_clustering.validation import Interval, check_is_fitted, validate_params


def _check(x: np.ndarray, k: int) -> None:
    if k > len(x):
        raise ValueError(f"n_clusters={k} is more than the {len(x)} images")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain non-finite values")


class _CentroidPredict(Clusterer):

    uses_global_rng: ClassVar[bool] = False  # deterministic, or seeded from its own seed
    def _remember(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.centroids_ = np.stack([x[labels == c].mean(0) if np.any(labels == c) else np.full(x.shape[1], np.inf) for c in range(self.n_clusters)])

    def predict(self, embeddings: Embeddings) -> Clustering:
        check_is_fitted(self, "centroids_")
        labels = nearest_centroid(embeddings.image_vectors(), self.centroids_)
        return Clustering(labels, self.n_clusters, info={"assigned_by": "nearest centroid"})


class WardClusterer(_CentroidPredict):
    """Agglomerative clustering with Ward linkage (both papers' default); two-stage beyond ``max_exact`` images.

    Exact Ward needs memory growing with N². Beyond ``max_exact`` images it runs in two stages: mini-batch k-means
    to ``n_micro`` micro-clusters, then Ward on their centroids weighted by their sizes (the Lance–Williams update
    started from the micro-cluster sizes, so the merge costs equal exact Ward's on those groups). New images go to
    the nearest centroid.
    """

    def __init__(self, n_clusters: int = 2, max_exact: int = 10000, n_micro: int = 1500, seed: int = 42):
        self.n_clusters = n_clusters
        self.max_exact = max_exact
        self.n_micro = n_micro
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        if len(x) <= self.max_exact:
            labels = AgglomerativeClustering(n_clusters=self.n_clusters, linkage="ward").fit_predict(x)
            info = {"ward": "exact"}
        else:
            from sklearn.cluster import MiniBatchKMeans

            m = max(self.n_clusters, min(self.n_micro, len(x)))
            micro = MiniBatchKMeans(m, init="random", n_init=1, max_iter=50, random_state=self.seed, batch_size=4096).fit(x)
            counts = np.bincount(micro.labels_, minlength=m).astype(np.float64)
            keep = counts > 0
            remap = np.cumsum(keep) - 1
            top = weighted_ward(micro.cluster_centers_[keep], counts[keep], self.n_clusters)
            labels = top[remap[micro.labels_]]
            info = {"ward": f"two-stage: mini-batch k-means to {int(keep.sum())} micro-clusters, then size-weighted Ward"}
        self._remember(x, labels)
        return Clustering(labels, self.n_clusters, info=info)


class AgglomerativeClusterer(_CentroidPredict):
    """Agglomerative clustering with any of scikit-learn's linkages (``average``, ``complete``, ``single``, ``ward``).

    Average linkage merges by the mean distance between members, so it follows a distance matrix's own geometry
    where Ward's variance criterion assumes compact Euclidean clusters (e.g. Hausdorff distances embedded by MDS).
    Memory grows with N² (no two-stage mode). New images go to the nearest centroid."""

    parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(1, None, "left", integer=True)], "linkage": [{"average", "complete", "single", "ward"}],
    }

    def __init__(self, n_clusters: int = 2, linkage: str = "average", metric: str = "euclidean"):
        self.n_clusters = n_clusters
        self.linkage = linkage
        self.metric = metric

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        validate_params(self)
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        metric = "euclidean" if self.linkage == "ward" else self.metric
        labels = AgglomerativeClustering(n_clusters=self.n_clusters, linkage=self.linkage, metric=metric).fit_predict(x)
        self._remember(x, labels)
        return Clustering(labels, self.n_clusters, info={"linkage": self.linkage, "metric": metric})


def weighted_ward(centroids: np.ndarray, sizes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Ward agglomeration of groups given by their centroids and sizes, down to ``n_clusters``; returns a label per
    group. Merge cost of A, B = nA·nB/(nA+nB)·‖cA − cB‖² (exactly Ward's increase in within-cluster variance),
    updated by Lance–Williams; O(m²) memory and time for m groups, vectorised per merge."""
    m = len(centroids)
    n = sizes.astype(np.float64).copy()
    c = np.asarray(centroids, np.float64)
    norms = (c**2).sum(1)
    sq = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (c @ c.T), 0.0)  # m×m, never an m×m×D difference array
    d = (n[:, None] * n[None, :] / (n[:, None] + n[None, :])) * sq
    np.fill_diagonal(d, np.inf)
    active = np.ones(m, bool)
    parent = np.arange(m)
    row_arg = d.argmin(1)
    row_min = d[np.arange(m), row_arg]
    for _ in range(m - n_clusters):
        a = int(np.argmin(row_min))
        b = int(row_arg[a])
        na, nb = n[a], n[b]
        # Lance–Williams for Ward: d(a∪b, k) = ((na+nk) d(a,k) + (nb+nk) d(b,k) − nk d(a,b)) / (na+nb+nk)
        new = ((na + n) * d[a] + (nb + n) * d[b] - n * d[a, b]) / (na + nb + n)
        new[~active] = np.inf
        new[a] = new[b] = np.inf
        d[a, :] = new
        d[:, a] = new
        d[b, :] = np.inf
        d[:, b] = np.inf
        n[a] = na + nb
        active[b] = False
        parent[parent == b] = a
        row_min[b] = np.inf
        # rows whose nearest was a or b are recomputed; others may only have found a closer a
        stale = np.flatnonzero(active & ((row_arg == a) | (row_arg == b)))
        stale = np.union1d(stale, [a])
        row_arg[stale] = d[stale].argmin(1)
        row_min[stale] = d[stale, row_arg[stale]]
        closer = active & (new < row_min)
        row_arg[closer] = a
        row_min[closer] = new[closer]
    roots = np.unique(parent)
    return np.searchsorted(roots, parent)


class KMeansClusterer(Clusterer):
    """k-means: scikit-learn's ``KMeans`` (k-means++, ``n_init`` restarts) up to ``max_exact`` images; beyond that
    faiss (its GPU build when present) or, without faiss, scikit-learn's ``MiniBatchKMeans``, whose memory does not
    grow with N beyond the batch. ``backend`` forces one: ``sklearn``, ``faiss`` or ``minibatch``."""

    uses_global_rng: ClassVar[bool] = False  # deterministic, or seeded from its own seed

    parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(1, None, "left", integer=True)], "n_init": [Interval(1, None, "left", integer=True)],
        "backend": [{"auto", "sklearn", "faiss", "minibatch"}], "max_exact": [Interval(1, None, "left", integer=True)],
    }

    def __init__(self, n_clusters: int = 2, n_init: int = 10, backend: str = "auto", max_exact: int = 20000, seed: int = 42):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.backend = backend
        self.max_exact = max_exact
        self.seed = seed

    def _backend(self, n: int) -> str:
        if self.backend not in ("auto", "sklearn", "faiss", "minibatch"):
            raise ValueError(f"backend={self.backend!r}: choose auto, sklearn, faiss or minibatch")
        if self.backend != "auto":
            return self.backend
        if n <= self.max_exact:
            return "sklearn"
        try:
            import faiss  # noqa: F401
        except ImportError:
            return "minibatch"
        return "faiss"

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        validate_params(self)
        x = embeddings.image_vectors()
        _check(x, self.n_clusters)
        self.backend_ = self._backend(len(x))
        if self.backend_ == "faiss":
            try:
                import faiss
            except ImportError:
                raise ValueError("backend='faiss' needs the faiss package: pip install faiss-cpu (or faiss-gpu)") from None
            xf = np.ascontiguousarray(x, dtype=np.float32)
            gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
            km = faiss.Kmeans(xf.shape[1], self.n_clusters, niter=50, nredo=self.n_init, seed=self.seed, gpu=gpu,
                              max_points_per_centroid=max(256, len(xf) // self.n_clusters + 1))
            km.train(xf)
            self.cluster_centers_ = km.centroids.astype(np.float64)
            labels = nearest_centroid(x, self.cluster_centers_)
        elif self.backend_ == "minibatch":
            from sklearn.cluster import MiniBatchKMeans

            model = MiniBatchKMeans(self.n_clusters, n_init=self.n_init, batch_size=4096, random_state=self.seed).fit(x.astype(np.float32))
            self.cluster_centers_ = model.cluster_centers_.astype(np.float64)
            labels = model.labels_.copy()
        else:
            model = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.seed).fit(x.astype(np.float64))
            self.cluster_centers_ = model.cluster_centers_
            labels = model.labels_.copy()
        return Clustering(labels.astype(np.int64), self.n_clusters, info={"backend": self.backend_})

    def predict(self, embeddings: Embeddings) -> Clustering:
        check_is_fitted(self, "cluster_centers_")
        return Clustering(nearest_centroid(embeddings.image_vectors(), self.cluster_centers_), self.n_clusters)


class GMMClusterer(Clusterer):
    """Gaussian mixture (scikit-learn; ``covariance_type`` full as in blind-lca's Table 4, diag for wide
    embeddings); gives per-image probabilities."""

    uses_global_rng: ClassVar[bool] = False  # deterministic, or seeded from its own seed

    parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(1, None, "left", integer=True)],
        "covariance_type": [{"full", "tied", "diag", "spherical"}], "reg_covar": [Interval(0, None, "left")],
    }

    def __init__(self, n_clusters: int = 2, covariance_type: str = "full", reg_covar: float = 1e-4, seed: int = 42):
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        validate_params(self)
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        self.model_ = GaussianMixture(self.n_clusters, covariance_type=self.covariance_type, reg_covar=self.reg_covar, random_state=self.seed).fit(x)
        return Clustering(self.model_.predict(x), self.n_clusters, probabilities=self.model_.predict_proba(x))

    def predict(self, embeddings: Embeddings) -> Clustering:
        check_is_fitted(self, "model_")
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
