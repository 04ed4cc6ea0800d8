"""Region merging (AnomalyNCD §III-D): an image's class is the area-weighted mix of its crops' class probabilities."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from anomaly_clustering.features_ops import nearest_centroid
from anomaly_clustering.interfaces import Clusterer
from anomaly_clustering.records import Clustering, Embeddings


def merge_regions(probabilities: np.ndarray, image_index: np.ndarray, sqrt_areas: np.ndarray, n_images: int, temperature: float) -> np.ndarray:
    """Per image: softmax over its crops of sqrt(area) / temperature, times the crops' probabilities, summed.
    Images without crops get a uniform row."""
    probabilities = np.asarray(probabilities, np.float64)
    image_index = np.asarray(image_index, np.int64)
    logits = np.asarray(sqrt_areas, np.float64) / temperature
    top = np.full(n_images, -np.inf)
    np.maximum.at(top, image_index, logits)
    e = np.exp(logits - top[image_index])
    norm = np.bincount(image_index, weights=e, minlength=n_images)
    alpha = e / norm[image_index]
    out = np.zeros((n_images, probabilities.shape[1]))
    np.add.at(out, image_index, probabilities * alpha[:, None])
    out[norm == 0] = 1.0 / probabilities.shape[1]
    return out


class RegionMerge(Clusterer):
    """AnomalyNCD's region merging: softmax(sqrt(area)/T)-weighted crop probabilities → argmax per image.

    Expects per-crop class probabilities (``mgvit-ncd``) with ``weights`` = sqrt(mask pixel count).
    ``temperature``: T = 100 for MVTec AD, 50 for MTD (the paper's). The merge itself learns nothing, so ``predict``
    works on any new embeddings of that kind.

    Collapse guard (``collapse_fallback``): when the argmax's clusters amount to fewer than ``min_used_fraction``
    of K effective clusters (the perplexity, exp of the entropy of the cluster sizes: 1.4 for sizes 33/1/2, 3.0 for
    12/12/12), as a head that sends nearly every crop to one class does (short CPU schedules can), ``fit_predict``
    groups the images by k-means on their merged probability rows instead and says so in the clustering's info;
    ``predict`` then assigns new images to the nearest of those centroids.
    """

    uses_global_rng: ClassVar[bool] = False  # k-means seeded from its own seed

    def __init__(self, n_clusters: int = 2, temperature: float = 100.0, collapse_fallback: bool = True, min_used_fraction: float = 0.5, seed: int = 42):
        self.n_clusters = n_clusters
        self.temperature = temperature
        self.collapse_fallback = collapse_fallback
        self.min_used_fraction = min_used_fraction
        self.seed = seed

    def _merged(self, embeddings: Embeddings) -> np.ndarray:
        kind = embeddings.info.get("kind")
        if kind not in (None, "probabilities"):
            raise ValueError(f"region-merge needs per-crop class probabilities (e.g. from mgvit-ncd), got {kind!r} embeddings")
        sqrt_areas = np.ones(len(embeddings.image_index)) if embeddings.weights is None else embeddings.weights
        return merge_regions(embeddings.vectors, embeddings.image_index, sqrt_areas, embeddings.n_images, self.temperature)

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        probs = self._merged(embeddings)
        k = max(self.n_clusters, probs.shape[1])
        labels = probs.argmax(1)
        share = np.bincount(labels, minlength=k) / max(len(labels), 1)
        used = float(np.exp(-(share[share > 0] * np.log(share[share > 0])).sum()))  # effective number of clusters
        info = {"merged_by": f"area-weighted softmax, T={self.temperature}", "effective_clusters_of_argmax": round(used, 2)}
        self.fallback_centroids_ = None
        wanted = min(self.n_clusters, len(probs))
        if self.collapse_fallback and used < max(1.5, self.min_used_fraction * wanted) and len(probs) >= wanted > 1:
            from sklearn.cluster import KMeans

            km = KMeans(wanted, n_init=10, random_state=self.seed).fit(probs)
            labels, self.fallback_centroids_ = km.labels_.copy(), km.cluster_centers_
            info["collapse_fallback"] = f"argmax gave {used:.1f} effective clusters of {wanted}: k-means on the merged probabilities"
        return Clustering(labels.astype(np.int64), k, probabilities=probs.astype(np.float32), info=info)

    def predict(self, embeddings: Embeddings) -> Clustering:
        probs = self._merged(embeddings)
        centroids = getattr(self, "fallback_centroids_", None)
        if centroids is not None:
            labels = nearest_centroid(probs, centroids)
        else:
            labels = probs.argmax(1)
        return Clustering(labels.astype(np.int64), max(self.n_clusters, probs.shape[1]), probabilities=probs.astype(np.float32))
