"""Region merging (AnomalyNCD §III-D): an image's class is the area-weighted mix of its crops' class probabilities."""

from __future__ import annotations

import numpy as np

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
    ``temperature``: T = 100 for MVTec AD, 50 for MTD (the paper's). Learns nothing, so ``predict`` works on any
    new embeddings of that kind.
    """

    def __init__(self, n_clusters: int = 2, temperature: float = 100.0):
        self.n_clusters = n_clusters
        self.temperature = temperature

    def _merge(self, embeddings: Embeddings) -> Clustering:
        kind = embeddings.info.get("kind")
        if kind not in (None, "probabilities"):
            raise ValueError(f"region-merge needs per-crop class probabilities (e.g. from mgvit-ncd), got {kind!r} embeddings")
        sqrt_areas = np.ones(len(embeddings.image_index)) if embeddings.weights is None else embeddings.weights
        probs = merge_regions(embeddings.vectors, embeddings.image_index, sqrt_areas, embeddings.n_images, self.temperature)
        return Clustering(probs.argmax(1), max(self.n_clusters, probs.shape[1]), probabilities=probs.astype(np.float32),
                          info={"merged_by": f"area-weighted softmax, T={self.temperature}"})

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        return self._merge(embeddings)

    def predict(self, embeddings: Embeddings) -> Clustering:
        return self._merge(embeddings)
