"""Estimating the number of clusters K (``--n_clusters auto``): the clusterer's partitions for K = k_min…k_max are
scored by one criterion and the best K is kept. ``auto`` is the rule chosen on the development suite (issue #21 §3,
``benchmarks/k_estimate.py``); the others stay selectable by ``--k_method``."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_samples

from .records import PER_IMAGE_INFO, Clustering, Embeddings, ImageSet

__all__ = [
    "K_METHODS", "AUTO_METHOD", "select_n_clusters", "estimate_k", "method_label", "ward_cuts", "eigengap_curve", "sqrt_neighbours",
    "cluster_distinct", "distinct_images", "take_embeddings",
]

MAX_DRAW = 2000  # estimators that recluster or build an N×N graph work on a seeded subsample of at most this many images
Labels = Callable[[int], np.ndarray]  # K → the clusterer's labels at K


def ward_cuts(x: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Ward's tree of ``x`` (one linkage, the clusterer's criterion) cut at every K in ``ks``: nested partitions."""
    from scipy.cluster.hierarchy import cut_tree, linkage

    cuts = cut_tree(linkage(x, "ward"), n_clusters=list(ks))
    return {k: cuts[:, i].astype(np.int64) for i, k in enumerate(ks)}


def _subsample(x: np.ndarray, seed: int, n: int = MAX_DRAW) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


def _scored(labels: np.ndarray, n: int) -> bool:
    """Whether a partition can be scored: at least two clusters, not one image per cluster."""
    return 1 < len(np.unique(labels)) < n


def _argbest(curve: dict[int, float], sign: float = 1.0) -> int:
    """The K of the best score (the smallest K on ties)."""
    return min(curve, key=lambda k: (-sign * curve[k], k))


# ------------------------------------------------------------------------------------- criteria on the partitions
def _silhouette(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    """Mean silhouette (Rousseeuw 1987): dominated by the largest cluster, so it favours 'good vs the rest'."""
    curve = {k: float(silhouette_samples(x, lab).mean()) if _scored(lab := labels(k), len(x)) else -1.0 for k in ks}
    return _argbest(curve), curve


def _silhouette_macro(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    """Silhouette averaged per cluster first, then over clusters: a small defect type weighs as much as the large
    defect-free group, so splitting a well-separated small type off pays even when most images are normal."""
    curve = {}
    for k in ks:
        lab = labels(k)
        if not _scored(lab, len(x)):
            curve[k] = -1.0
            continue
        s = silhouette_samples(x, lab)
        curve[k] = float(np.mean([s[lab == c].mean() for c in np.unique(lab)]))
    return _argbest(curve), curve


def _calinski_harabasz(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    """Calinski–Harabasz: between- over within-cluster dispersion, each per degree of freedom (highest wins)."""
    curve = {k: float(calinski_harabasz_score(x, lab)) if _scored(lab := labels(k), len(x)) else 0.0 for k in ks}
    return _argbest(curve), curve


def _davies_bouldin(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    """Davies–Bouldin: mean over clusters of the worst (spread_i + spread_j) / centre distance (lowest wins)."""
    curve = {k: float(davies_bouldin_score(x, lab)) if _scored(lab := labels(k), len(x)) else 1e9 for k in ks}
    return _argbest(curve, -1.0), curve


def _log_w(x: np.ndarray, labels: np.ndarray) -> float:
    """log of the pooled within-cluster sum of squares."""
    sums = np.zeros((labels.max() + 1, x.shape[1]))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels)
    return float(np.log(max((x**2).sum() - ((sums**2).sum(1) / np.maximum(counts, 1)).sum(), 1e-12)))


def _gap(x: np.ndarray, ks: list[int], labels: Labels, seed: int, n_refs: int = 10) -> tuple[int, dict[int, float]]:
    """Gap statistic (Tibshirani, Walther & Hastie 2001): E*[log W_K] − log W_K with reference sets drawn uniformly
    from the box aligned with the data's principal axes, all clustered by Ward; the smallest K with
    Gap(K) ≥ Gap(K+1) − s_{K+1} (their one-standard-error rule), else the K of the largest gap."""
    x = _subsample(x, seed)
    ext = [*ks, ks[-1] + 1] if ks[-1] + 1 < len(x) else list(ks)
    own = ward_cuts(x, ext)
    log_w = np.array([_log_w(x, own[k]) for k in ext])
    centre = x.mean(0)
    _, _, vt = np.linalg.svd(x - centre, full_matrices=False)
    proj = (x - centre) @ vt.T
    lo, hi = proj.min(0), proj.max(0)
    rng = np.random.default_rng(seed)
    ref = np.empty((n_refs, len(ext)))
    for b in range(n_refs):
        r = rng.uniform(lo, hi, size=proj.shape) @ vt
        cuts = ward_cuts(r, ext)
        ref[b] = [_log_w(r, cuts[k]) for k in ext]
    gap = ref.mean(0) - log_w
    s = ref.std(0) * np.sqrt(1 + 1 / n_refs)
    curve = {k: float(gap[i]) for i, k in enumerate(ks)}
    for i, k in enumerate(ks):
        if i + 1 < len(ext) and gap[i] >= gap[i + 1] - s[i + 1]:
            return k, curve
    return _argbest(curve), curve


def _krzanowski_lai(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    """Krzanowski–Lai (1988): |DIFF(K) / DIFF(K+1)| with DIFF(K) = (K−1)^{2/p} W_{K−1} − K^{2/p} W_K on Ward's
    nested partitions (highest wins)."""
    x = _subsample(x, seed)
    ext = [k for k in range(ks[0] - 1, ks[-1] + 2) if k < len(x)]
    cuts = ward_cuts(x, ext)
    p = x.shape[1]
    w = {k: np.exp(_log_w(x, cuts[k])) * k ** (2 / p) for k in ext}
    curve = {}
    for k in ks:
        if k + 1 in w:
            nxt = w[k] - w[k + 1]
            curve[k] = float(abs(w[k - 1] - w[k]) / max(abs(nxt), 1e-12))
    curve = curve or {ks[0]: 0.0}
    return _argbest(curve), curve


# ------------------------------------------------------------------------------------------------ the tree itself
def _merge_heights(x: np.ndarray) -> np.ndarray:
    """Ward's merge heights, ascending (the last one joins the final two clusters)."""
    from scipy.cluster.hierarchy import linkage

    return linkage(x, "ward")[:, 2]


def _dendrogram(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    """The largest relative jump in Ward's merge heights: going from K to K−1 clusters costs this many times the
    step from K+1 to K (highest wins)."""
    h = _merge_heights(_subsample(x, seed))
    n = len(h) + 1
    curve = {k: float(h[n - k] / max(h[n - k - 1], 1e-12)) for k in ks if n - k - 1 >= 0}
    return _argbest(curve), curve


def _lmethod(x: np.ndarray, ks: list[int], labels: Labels, seed: int, window: int = 4) -> tuple[int, dict[int, float]]:
    """L-method (Salvador & Chan 2004): the knee of Ward's merge height against the number of clusters, where two
    straight lines (K = 1…c and c+1…window·k_max) fit best; the curve is minus the weighted RMSE of the fit at c."""
    h = _merge_heights(_subsample(x, seed))[::-1]  # h[i]: the height that leaves i+1 clusters → i clusters… K = i + 2
    m = min(len(h), window * ks[-1])
    kk, hh = np.arange(2, m + 2, dtype=np.float64), h[:m]

    def rmse(a: np.ndarray, b: np.ndarray) -> float:
        if len(a) < 2:
            return 0.0
        coef = np.polyfit(a, b, 1)
        return float(np.sqrt(np.mean((np.polyval(coef, a) - b) ** 2)))

    curve = {}
    for k in ks:
        c = k - 1  # the left line covers heights at 2…K, the right one K+1…
        if c < 1 or c >= m - 1:
            continue
        curve[k] = -(c * rmse(kk[:c], hh[:c]) + (m - c) * rmse(kk[c:], hh[c:])) / m
    curve = curve or {ks[0]: 0.0}
    return _argbest(curve), curve


# -------------------------------------------------------------------------------------------------- the graph
def eigengap_curve(x: np.ndarray, k_min: int, k_max: int, n_neighbors: int | None = None) -> dict[int, float]:
    """Eigengap heuristic: gaps between consecutive eigenvalues of the normalised Laplacian of an RBF affinity
    with local scaling (Zelnik-Manor & Perona: σ_i = distance to the 7th neighbour; one global median bandwidth
    blurs well-separated clusters together); the K with the largest gap λ_{K+1} − λ_K wins. ``n_neighbors``: keep
    only each image's nearest neighbours (a symmetric k-NN graph) instead of the full affinity."""
    from scipy.spatial.distance import pdist, squareform

    d = squareform(pdist(x, "sqeuclidean"))
    order = np.argsort(d, axis=1)
    sigma = np.sqrt(np.take_along_axis(d, order[:, [min(7, len(x) - 1)]], 1)[:, 0])
    sigma = np.maximum(sigma, max(float(sigma.max()), 1.0) * 1e-6)
    a = np.exp(-d / (sigma[:, None] * sigma[None, :]))
    if n_neighbors is not None:
        keep = np.zeros_like(a, dtype=bool)
        np.put_along_axis(keep, order[:, 1 : n_neighbors + 1], True, 1)
        a = np.where(keep | keep.T, a, 0.0)
    np.fill_diagonal(a, 0.0)
    inv = 1.0 / np.sqrt(np.maximum(a.sum(1), 1e-12))
    lap = np.eye(len(x)) - inv[:, None] * a * inv[None, :]
    ev = np.sort(np.linalg.eigvalsh(lap))
    return {k: float(ev[k] - ev[k - 1]) for k in range(k_min, k_max + 1) if k < len(ev)}


def _eigengap(x: np.ndarray, ks: list[int], labels: Labels, seed: int) -> tuple[int, dict[int, float]]:
    curve = eigengap_curve(_subsample(x, seed), ks[0], ks[-1])
    return _argbest(curve), curve


def _eigengap_knn(x: np.ndarray, ks: list[int], labels: Labels, seed: int, n_neighbors: int = 10) -> tuple[int, dict[int, float]]:
    """Eigengap of the symmetric ``n_neighbors``-NN graph (``auto``)."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"eigengap-knn: n_neighbors={n_neighbors!r} must be a positive integer")
    curve = eigengap_curve(_subsample(x, seed), ks[0], ks[-1], int(n_neighbors))
    return _argbest(curve), curve


def sqrt_neighbours(n: int, min_neighbors: int = 10, scale: float = 0.4) -> int:
    """The k-NN graph's neighbour count for ``n`` images: max(``min_neighbors``, round(``scale``·√n)), below n.
    A group of fewer images than the count cannot come apart in a symmetric k-NN graph, so the count sets the
    smallest group the eigengap counts; a fixed 10 lets a large set's broad groups fall into pieces (MTD's 1 344
    images: K = 9 on one seed of ``multiview-anomaly``). With the defaults, sets up to 625 images keep 10."""
    if isinstance(min_neighbors, bool) or not isinstance(min_neighbors, (int, np.integer)) or min_neighbors < 1:
        raise ValueError(f"eigengap-knn-sqrt: min_neighbors={min_neighbors!r} must be a positive integer")
    if not (isinstance(scale, (int, float, np.floating)) and np.isfinite(scale) and scale >= 0):
        raise ValueError(f"eigengap-knn-sqrt: scale={scale!r} must be a finite number >= 0")
    return max(1, min(max(int(min_neighbors), round(float(scale) * np.sqrt(n))), n - 1))


def _eigengap_knn_sqrt(x: np.ndarray, ks: list[int], labels: Labels, seed: int, min_neighbors: int = 10,
                       scale: float = 0.4) -> tuple[int, dict[int, float]]:
    """Eigengap of the symmetric k-NN graph with k = :func:`sqrt_neighbours` of the images it sees: the
    ``eigengap-knn`` rule whose neighbour count grows with √N (benchmarks/README.md, "Estimating K", 2026-12-01)."""
    sqrt_neighbours(len(x), min_neighbors, scale)  # validates the options before the N×N work
    x = _subsample(x, seed)
    curve = eigengap_curve(x, ks[0], ks[-1], sqrt_neighbours(len(x), min_neighbors, scale))
    return _argbest(curve), curve


# ---------------------------------------------------------------------------------------------- resampling
def _prediction_strength(x: np.ndarray, ks: list[int], labels: Labels, seed: int, threshold: float = 0.8,
                         n_splits: int = 5) -> tuple[int, dict[int, float]]:
    """Prediction strength (Tibshirani & Walther 2005): split the images in halves, cluster both by Ward, assign the
    test half to the training half's centroids; per test cluster the share of its pairs kept together, the worst
    cluster's share, averaged over ``n_splits`` seeded splits. The largest K whose strength ≥ ``threshold``."""
    x = _subsample(x, seed)
    rng = np.random.default_rng(seed)
    ps = np.zeros(len(ks))
    for _ in range(n_splits):
        perm = rng.permutation(len(x))
        train, test = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
        usable = [k for k in ks if k < min(len(train), len(test))]
        tr, te = ward_cuts(train, usable), ward_cuts(test, usable)
        for i, k in enumerate(ks):
            if k not in tr:
                continue
            cent = np.stack([train[tr[k] == c].mean(0) for c in range(k)])
            pred = np.argmin(((test[:, None, :] - cent[None]) ** 2).sum(-1), 1)
            shares = []
            for c in range(k):
                members = pred[te[k] == c]
                m = len(members)
                if m >= 2:
                    same = np.bincount(members, minlength=k)
                    shares.append(float((same * (same - 1)).sum() / (m * (m - 1))))
            ps[i] += min(shares) if shares else 0.0
    curve = {k: float(ps[i] / n_splits) for i, k in enumerate(ks)}
    passing = [k for k in ks if curve[k] >= threshold]
    return (max(passing) if passing else _argbest(curve)), curve


def _stability(x: np.ndarray, ks: list[int], labels: Labels, seed: int, n_pairs: int = 5, fraction: float = 0.8,
               tolerance: float = 0.05) -> tuple[int, dict[int, float]]:
    """Stability under subsampling (Ben-Hur, Elisseeff & Guyon 2002): Ward on two random 80 % subsamples, adjusted
    Rand index of their partitions on the shared images, averaged over ``n_pairs`` seeded pairs. Merging true
    clusters is as stable as finding them, so the largest K within ``tolerance`` of the most stable wins."""
    x = _subsample(x, seed)
    rng = np.random.default_rng(seed)
    m = int(round(fraction * len(x)))
    score = np.zeros(len(ks))
    for _ in range(n_pairs):
        a, b = np.sort(rng.choice(len(x), m, replace=False)), np.sort(rng.choice(len(x), m, replace=False))
        shared, ia, ib = np.intersect1d(a, b, return_indices=True)
        ca, cb = ward_cuts(x[a], ks), ward_cuts(x[b], ks)
        score += [adjusted_rand_score(ca[k][ia], cb[k][ib]) for k in ks]
    curve = {k: float(score[i] / n_pairs) for i, k in enumerate(ks)}
    return max(k for k in ks if curve[k] >= max(curve.values()) - tolerance), curve


ESTIMATORS: dict[str, Callable[..., tuple[int, dict[int, float]]]] = {
    "silhouette": _silhouette,
    "silhouette-macro": _silhouette_macro,
    "calinski-harabasz": _calinski_harabasz,
    "davies-bouldin": _davies_bouldin,
    "gap": _gap,
    "krzanowski-lai": _krzanowski_lai,
    "dendrogram": _dendrogram,
    "lmethod": _lmethod,
    "eigengap": _eigengap,
    "eigengap-knn": _eigengap_knn,
    "eigengap-knn-sqrt": _eigengap_knn_sqrt,
    "prediction-strength": _prediction_strength,
    "stability": _stability,
}
AUTO_METHOD = "eigengap-knn"  # best worst case on the suite; truth ±1 on 3/4 sets with multiview-anomaly and multiview-all on 2026-12-02's maps, 2/4 on another machine's (README "Estimating K")
K_METHODS: tuple[str, ...] = ("auto", *ESTIMATORS)


def method_label(method: str) -> str:
    """The estimator ``method`` runs, as the run records it: ``auto`` names the rule it stands for."""
    return f"auto: {AUTO_METHOD}" if method == "auto" else method


def estimate_k(x: np.ndarray, k_min: int, k_max: int, method: str = "auto", seed: int = 0,
               labels: Labels | None = None, **options: Any) -> tuple[int, dict[int, float]]:
    """(K, curve K → score) by ``method`` over K = k_min…k_max on the rows of ``x``; ``labels`` gives the
    clusterer's partition at K (default: Ward's tree cut at K); ``options``: the estimator's own parameters."""
    if method not in K_METHODS:
        raise ValueError(f"--k_method {method!r}: choose one of {', '.join(K_METHODS)}")
    ks = list(range(k_min, k_max + 1))
    if labels is None:
        cuts: dict[int, np.ndarray] = {}

        def labels(k: int) -> np.ndarray:
            if not cuts:
                cuts.update(ward_cuts(x, ks))
            return cuts[k]

    return ESTIMATORS[AUTO_METHOD if method == "auto" else method](x, ks, labels, seed, **options)


def select_n_clusters(
    clusterer: Any, embeddings: Embeddings, k_min: int = 2, k_max: int = 10, method: str = "auto", seed: int = 0
) -> tuple[int, dict[int, float], Any, Clustering]:
    """Estimate K in [k_min, k_max] (capped at N−1) by ``method`` and fit ``clusterer`` at it.
    Returns (K, curve K → score, fitted clusterer, its clustering)."""
    if k_min > k_max:
        raise ValueError(f"--k_min {k_min} --k_max {k_max}: k_min must not exceed k_max")
    if method not in K_METHODS:
        raise ValueError(f"--k_method {method!r}: choose one of {', '.join(K_METHODS)}")
    x = embeddings.image_vectors().astype(np.float64)
    n = len(x)
    k_max = min(k_max, n - 1)
    k_min = max(2, min(k_min, k_max))
    if k_max < 2:
        raise ValueError(f"cannot estimate the number of clusters from {n} images; give --n_clusters")
    fits: dict[int, tuple[Any, Clustering]] = {}

    def fit(k: int) -> tuple[Any, Clustering]:
        if k not in fits:
            model = clone(clusterer).set_params(n_clusters=k)
            fits[k] = (model, model.fit_predict(embeddings))
        return fits[k]

    k, curve = estimate_k(x, k_min, k_max, method, seed, labels=lambda k: np.asarray(fit(k)[1].labels))
    model, result = fit(k)
    return k, curve, model, result


def distinct_images(images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """(keep, inverse): the index of the first image of each distinct pixel content (set order), and for every
    image the position of its content in ``keep``, so ``keep[inverse]`` points each image at its representative."""
    first: dict[str, int] = {}
    for i, d in enumerate(images.digests):
        first.setdefault(d, i)
    slot = {d: j for j, d in enumerate(first)}
    return np.fromiter(first.values(), np.int64, len(first)), np.array([slot[d] for d in images.digests], np.int64)


def take_embeddings(emb: Embeddings, keep: np.ndarray) -> Embeddings:
    """The rows of the images ``keep`` (renumbered 0…len(keep)−1), and their entries of the per-image ``info`` lists."""
    position = np.full(emb.n_images, -1, np.int64)
    position[keep] = np.arange(len(keep))
    index = np.asarray(emb.image_index)
    rows = np.flatnonzero(position[index] >= 0)
    weights = None if emb.weights is None else np.asarray(emb.weights)[rows]
    info = {k: ([v[int(i)] for i in keep] if k in PER_IMAGE_INFO and v is not None and len(v) == emb.n_images else v) for k, v in emb.info.items()}
    return Embeddings(np.asarray(emb.vectors)[rows], position[index[rows]], len(keep), weights, info)


def cluster_distinct(images: ImageSet, embeddings: Embeddings, cluster: Callable[[Embeddings], Clustering]) -> Clustering:
    """Run ``cluster`` on one copy of each distinct image and give every copy its label: pixel-identical images
    (the same picture saved twice) then always share a cluster, and do not flatten K's selection curve."""
    keep, inverse = distinct_images(images)
    if len(keep) == len(images):
        return cluster(embeddings)
    result = cluster(take_embeddings(embeddings, keep))
    probabilities = None if result.probabilities is None else np.asarray(result.probabilities)[inverse]
    info = {**result.info, "duplicates_merged": int(len(images) - len(keep))}
    return dataclasses.replace(result, labels=np.asarray(result.labels)[inverse], probabilities=probabilities, info=info)
