"""Estimating the number of clusters: silhouette over a range of K, or the eigengap of a similarity graph."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from sklearn.base import clone
from sklearn.metrics import silhouette_score

from .records import Clustering, Embeddings, ImageSet

__all__ = ["select_n_clusters", "eigengap_curve", "cluster_distinct", "distinct_images"]


def eigengap_curve(x: np.ndarray, k_min: int, k_max: int) -> dict[int, float]:
    """Eigengap heuristic: gaps between consecutive eigenvalues of the normalised Laplacian of an RBF affinity
    with local scaling (Zelnik-Manor & Perona: σ_i = distance to the 7th neighbour; one global median bandwidth
    blurs well-separated clusters together); the K with the largest gap λ_{K+1} − λ_K wins."""
    from scipy.spatial.distance import pdist, squareform

    d = squareform(pdist(x, "sqeuclidean"))
    sigma = np.sqrt(np.sort(d, axis=1)[:, min(7, len(x) - 1)])
    sigma = np.maximum(sigma, max(float(sigma.max()), 1.0) * 1e-6)
    a = np.exp(-d / (sigma[:, None] * sigma[None, :]))
    np.fill_diagonal(a, 0.0)
    deg = a.sum(1)
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    lap = np.eye(len(x)) - inv[:, None] * a * inv[None, :]
    ev = np.sort(np.linalg.eigvalsh(lap))
    return {k: float(ev[k] - ev[k - 1]) for k in range(k_min, k_max + 1) if k < len(ev)}


def select_n_clusters(
    clusterer: Any, embeddings: Embeddings, k_min: int = 2, k_max: int = 10, method: str = "silhouette"
) -> tuple[int, dict[int, float], Any, Clustering]:
    """Fit ``clusterer`` for each K in [k_min, k_max] (capped at N−1) and keep the best by ``method``.
    Returns (K, curve K → score, fitted clusterer, its clustering)."""
    if k_min > k_max:
        raise ValueError(f"--k_min {k_min} --k_max {k_max}: k_min must not exceed k_max")
    if method not in ("silhouette", "eigengap"):
        raise ValueError(f"--k_method {method!r}: choose 'silhouette' or 'eigengap'")
    x = embeddings.image_vectors()
    n = len(x)
    k_max = min(k_max, n - 1)
    k_min = max(2, min(k_min, k_max))
    if k_max < 2:
        raise ValueError(f"cannot estimate the number of clusters from {n} images; give --n_clusters")
    if method == "eigengap":
        curve = eigengap_curve(x, k_min, k_max)
        k = max(curve, key=curve.get)
        fitted = clone(clusterer).set_params(n_clusters=k)
        return k, curve, fitted, fitted.fit_predict(embeddings)
    if method != "silhouette":
        raise ValueError(f"--k_method {method!r}: choose 'silhouette' or 'eigengap'")
    curve: dict[int, float] = {}
    best: tuple[float, int, Any, Clustering] | None = None
    for k in range(k_min, k_max + 1):
        model = clone(clusterer).set_params(n_clusters=k)
        result = model.fit_predict(embeddings)
        labels = np.asarray(result.labels)
        score = float(silhouette_score(x, labels)) if 1 < len(np.unique(labels)) < n else -1.0
        curve[k] = score
        if best is None or score > best[0]:
            best = (score, k, model, result)
    assert best is not None
    return best[1], curve, best[2], best[3]


def distinct_images(images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """(keep, inverse): the index of the first image of each distinct pixel content (set order), and for every
    image the position of its content in ``keep``, so ``keep[inverse]`` points each image at its representative."""
    first: dict[str, int] = {}
    for i, d in enumerate(images.digests):
        first.setdefault(d, i)
    slot = {d: j for j, d in enumerate(first)}
    return np.fromiter(first.values(), np.int64, len(first)), np.array([slot[d] for d in images.digests], np.int64)


def _take_embeddings(emb: Embeddings, keep: np.ndarray) -> Embeddings:
    """The rows of the images ``keep`` (renumbered 0…len(keep)−1)."""
    position = np.full(emb.n_images, -1, np.int64)
    position[keep] = np.arange(len(keep))
    index = np.asarray(emb.image_index)
    rows = np.flatnonzero(position[index] >= 0)
    weights = None if emb.weights is None else np.asarray(emb.weights)[rows]
    return Embeddings(np.asarray(emb.vectors)[rows], position[index[rows]], len(keep), weights, dict(emb.info))


def cluster_distinct(images: ImageSet, embeddings: Embeddings, cluster: Callable[[Embeddings], Clustering]) -> Clustering:
    """Run ``cluster`` on one copy of each distinct image and give every copy its label: pixel-identical images
    (the same picture saved twice) then always share a cluster, and do not flatten K's selection curve."""
    keep, inverse = distinct_images(images)
    if len(keep) == len(images):
        return cluster(embeddings)
    result = cluster(_take_embeddings(embeddings, keep))
    probabilities = None if result.probabilities is None else np.asarray(result.probabilities)[inverse]
    info = {**result.info, "duplicates_merged": int(len(images) - len(keep))}
    return dataclasses.replace(result, labels=np.asarray(result.labels)[inverse], probabilities=probabilities, info=info)
