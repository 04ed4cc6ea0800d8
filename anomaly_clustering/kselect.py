"""Estimating the number of clusters: silhouette over a range of K, or the eigengap of a similarity graph."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import silhouette_score

from .records import Clustering, Embeddings

__all__ = ["select_n_clusters", "eigengap_curve"]


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
