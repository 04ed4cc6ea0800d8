"""Clusterers of the multi-view classifier: normal images set aside first by a set-level score rule, and a consensus
(co-association) over seeded k-means runs on random feature subspaces."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans

from anomaly_clustering.features_ops import nearest_centroid
from anomaly_clustering.interfaces import Clusterer
from anomaly_clustering.records import Clustering, Embeddings

__all__ = ["otsu_split", "normal_directions", "NORMAL_RULES", "NormalFirstClusterer", "ConsensusClusterer", "ViewSelectClusterer", "co_association", "view_subsets"]


def otsu_split(scores: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold on 1-D scores and its separability η = between-class / total variance (0…1): the two-group
    split that best explains the scores' spread, and how well it does."""
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    if n < 2 or s[-1] <= s[0]:
        return float(s[-1]) if n else 0.0, 0.0
    c = np.cumsum(s)
    k = np.arange(1, n)
    w0, w1 = k / n, 1.0 - k / n
    m0 = c[:-1] / k
    m1 = (c[-1] - c[:-1]) / (n - k)
    between = w0 * w1 * (m0 - m1) ** 2
    i = int(np.argmax(between))
    return float((s[i] + s[i + 1]) / 2.0), float(between[i] / max(s.var(), 1e-300))


def _check(x: np.ndarray, k: int) -> None:
    if k < 1 or k > len(x):
        raise ValueError(f"n_clusters={k}: need 1 <= K <= {len(x)} images")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain non-finite values")


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The K cluster means of ``x`` (K×D); an empty cluster's row is infinite, so that it is never the nearest."""
    return np.stack([x[labels == c].mean(0) if np.any(labels == c) else np.full(x.shape[1], np.inf) for c in range(k)])


class _Centroids(Clusterer):
    def _remember(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.centroids_ = _centroids(x, labels, self.n_clusters)

    def predict(self, embeddings: Embeddings) -> Clustering:
        if not hasattr(self, "centroids_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit_predict first")
        return Clustering(nearest_centroid(embeddings.image_vectors(), self.centroids_), self.n_clusters, info={"assigned_by": "nearest centroid"})


#: How :class:`NormalFirstClusterer` decides which images look normal: ``score`` (below Otsu's split of the log image
#: scores, ``info["image_scores"]``) or ``region`` (the binarizer gave the image no region, ``info["has_region"]``).
NORMAL_RULES = ("score", "region")


class NormalFirstClusterer(_Centroids):
    """Normal first, then types: a clear majority of normal-looking images is one cluster, Ward splits the rest into K − 1.

    Which images look normal (``normal_by``): ``score`` — below Otsu's threshold on the log image scores
    (``info["image_scores"]`` of the embeddings), set aside only if Otsu's separability η is at least
    ``min_separability``; ``region`` — the binarizer gave the image no region (``info["has_region"]``), a per-image
    verdict already made, so η plays no part; but a set-level gate leaves many defective images empty too when every
    image is defective, so with ``structure_check`` the group is set aside only if it looks like one population: cut
    by Ward into max(2, K − 1), it separates less well (silhouette) than the images with a region cut the same way
    (images of several defect types left empty split clearly; normal images do not). Either way the normal group is
    set aside only when it holds at least ``min_normal_share`` of the images (most images defect-free, the usual
    inspection set); otherwise Ward clusters all images into K. With ``normal_variation`` > 0, once the normal group
    is set aside, the principal directions that hold that share of its own variance are removed from every vector
    before Ward splits the rest: what varies among defect-free images (layout, lighting, the product's own variants)
    is not a defect type (nuisance attribute projection). With ``reassign_normal``, once Ward has split the rest, every
    image of the normal group joins the nearest of the K centroids (the normal group's and the K − 1 types'), compared
    on the columns the normal group carries (a view gated off for images without a region, all zeros there, says
    nothing about them): the binarizer misses defects, and one nearest-centroid step gives those back to their type
    (one step only: iterating lets the centroids drift). Deterministic (Ward; the silhouettes and the normal
    directions subsample beyond ``sample`` images with ``seed``).
    ``predict`` applies the same rule (the learned score threshold, or the new images' regions, and the learned
    directions): a normal-looking image joins the normal cluster (with ``reassign_normal``, the nearest of all K
    centroids on those columns), any other the nearest of the K − 1 type centroids.
    """

    def __init__(self, n_clusters: int = 2, normal_by: str = "score", min_normal_share: float = 0.5, min_separability: float = 0.8,
                 structure_check: bool = True, normal_variation: float = 0.0, reassign_normal: bool = False, sample: int = 2000,
                 seed: int = 0):
        self.n_clusters = n_clusters
        self.normal_by = normal_by
        self.min_normal_share = min_normal_share
        self.min_separability = min_separability
        self.structure_check = structure_check
        self.normal_variation = normal_variation
        self.reassign_normal = reassign_normal
        self.sample = sample
        self.seed = seed

    def _validate(self) -> None:
        if self.normal_by not in NORMAL_RULES:
            raise ValueError(f"normal_by={self.normal_by!r}: choose one of {', '.join(NORMAL_RULES)}")
        if not 0.0 < self.min_normal_share < 1.0 or not 0.0 <= self.min_separability <= 1.0:
            raise ValueError("min_normal_share must lie in (0, 1) and min_separability in [0, 1]")
        if isinstance(self.sample, bool) or int(self.sample) != self.sample or self.sample < 10:
            raise ValueError(f"sample={self.sample}: an integer >= 10")
        v = self.normal_variation
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 <= float(v) < 1.0:
            raise ValueError(f"normal_variation={self.normal_variation}: a share of the normal group's variance in [0, 1)")
        if not isinstance(self.reassign_normal, (bool, np.bool_)):
            raise ValueError(f"reassign_normal={self.reassign_normal!r}: True or False")

    def _separation(self, x: np.ndarray) -> float:
        """Silhouette of Ward's max(2, K − 1) clusters of ``x`` (−1 when fewer images than that + 1)."""
        from sklearn.metrics import silhouette_score

        k = max(2, self.n_clusters - 1)
        if len(x) <= k:
            return -1.0
        labels = _ward(x, k)
        if len(np.unique(labels)) < 2:
            return -1.0
        return float(silhouette_score(x, labels, sample_size=min(len(x), int(self.sample)), random_state=self.seed))

    def _normal(self, embeddings: Embeddings, n: int, threshold: float | None) -> tuple[np.ndarray | None, float | None, float | None]:
        """(normal-looking images or None when the embeddings carry no verdict, Otsu's η (None: no split made here),
        the score threshold used)."""
        key = "has_region" if self.normal_by == "region" else "image_scores"
        values = embeddings.info.get(key)
        if values is None:
            if self.normal_by == "region":
                raise ValueError("normal_by='region' needs info['has_region'] (the binarizer's verdict per image), which the "
                                 "multiview representation passes; this representation does not")
            return None, None, None
        if len(values) != n:
            raise ValueError(f"info[{key!r}] holds {len(values)} entries for {n} images")
        if self.normal_by == "region":
            return ~np.asarray(values, bool), None, None
        s = np.log(np.maximum(np.asarray(values, np.float64), 1e-12))
        if threshold is not None:  # predict: the threshold learned in fit
            return s <= threshold, None, float(threshold)
        threshold, eta = otsu_split(s)
        return s <= threshold, float(eta), float(threshold)

    def _set_aside(self, x: np.ndarray, normal: np.ndarray, eta: float | None) -> tuple[bool, dict[str, float]]:
        """Whether the normal-looking group becomes one cluster (the rule's conditions), and the structure check's
        silhouettes when it ran."""
        k = self.n_clusters
        clear = self.normal_by == "region" or (eta is not None and eta >= self.min_separability)
        if not (k >= 2 and normal.mean() >= self.min_normal_share and clear and (~normal).sum() >= k - 1):
            return False, {}
        if self.normal_by != "region" or not self.structure_check:
            return True, {}
        structure = {"silhouette_normal": self._separation(x[normal]), "silhouette_rest": self._separation(x[~normal])}
        return structure["silhouette_normal"] < structure["silhouette_rest"], structure

    def _normal_basis(self, normal: np.ndarray) -> np.ndarray:
        """The normal group's principal directions to remove (estimated on at most ``sample`` of its images)."""
        if len(normal) > self.sample:
            normal = normal[np.random.default_rng(self.seed).choice(len(normal), int(self.sample), replace=False)]
        return normal_directions(normal, float(self.normal_variation))

    def _without_normal_variation(self, x: np.ndarray) -> np.ndarray:
        """``x`` without its components along the normal group's principal directions learned in fit (if any)."""
        v = getattr(self, "normal_basis_", None)
        return x if v is None else x - (x @ v.T) @ v

    @staticmethod
    def _columns_carried(normal: np.ndarray) -> np.ndarray | None:
        """The columns not all zero over the normal group (None: none is, nothing to compare on)."""
        carried = np.any(normal != 0, axis=0)
        return carried if carried.any() else None

    def _nearest_on_shared(self, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """Index of the nearest of ``centroids`` for each row of ``x``, on the columns the normal group carries."""
        return nearest_centroid(x[:, self.shared_columns_], centroids[:, self.shared_columns_])

    def _normal_then_types(self, x: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """The normal group as cluster K − 1 and Ward's K − 1 types of the rest; with ``reassign_normal`` the group's
        images then join the nearest of the K centroids (one step)."""
        k = self.n_clusters
        labels = np.full(len(x), k - 1, dtype=np.int64)
        rest = np.flatnonzero(~normal)
        labels[rest] = _ward(x[rest], k - 1)
        if self.shared_columns_ is not None:
            labels[normal] = self._nearest_on_shared(x[normal], _centroids(x, labels, k))
        return labels

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        self._validate()
        x = embeddings.image_vectors().astype(np.float64)
        _check(x, self.n_clusters)
        k = self.n_clusters
        normal, eta, threshold = self._normal(embeddings, len(x), None)
        if normal is None:  # a representation that passes no scores: nothing to set aside
            normal = np.zeros(len(x), bool)
        use, structure = self._set_aside(x, normal, eta)
        self.normal_basis_ = self._normal_basis(x[normal]) if use and self.normal_variation > 0 else None
        self.shared_columns_ = self._columns_carried(x[normal]) if use and self.reassign_normal else None
        x = self._without_normal_variation(x)
        labels = self._normal_then_types(x, normal) if use else _ward(x, k)
        self._remember(x, labels)
        self.normal_set_aside_ = bool(use)
        self.score_threshold_ = threshold
        info = {"normal_set_aside": bool(use), "normal_by": self.normal_by, "normal_share": float(normal.mean()), **structure}
        if self.normal_basis_ is not None:
            info["normal_directions_removed"] = int(len(self.normal_basis_))
        if self.shared_columns_ is not None:
            info["normal_reassigned"] = int(np.sum(labels[normal] != k - 1))
        if eta is not None:
            info["otsu_eta"] = float(eta)
        return Clustering(labels, k, info=info)

    def predict(self, embeddings: Embeddings) -> Clustering:
        if not hasattr(self, "normal_set_aside_"):
            raise RuntimeError("NormalFirstClusterer is not fitted: call fit_predict first")
        if not self.normal_set_aside_:
            return super().predict(embeddings)
        x = self._without_normal_variation(embeddings.image_vectors().astype(np.float64))
        normal, _, _ = self._normal(embeddings, len(x), self.score_threshold_)
        if normal is None:
            raise ValueError("the normal cluster was set aside by image scores; predict needs info['image_scores'] too")
        labels = np.full(len(x), self.n_clusters - 1, dtype=np.int64)
        labels[~normal] = nearest_centroid(x[~normal], self.centroids_[: self.n_clusters - 1])
        if getattr(self, "shared_columns_", None) is not None and normal.any():
            labels[normal] = self._nearest_on_shared(x[normal], self.centroids_)
        return Clustering(labels, self.n_clusters, info={"assigned_by": f"normal by {self.normal_by}, else nearest type centroid"})


def normal_directions(normal: np.ndarray, share: float) -> np.ndarray:
    """The first principal directions (rows, unit length) of the normal images' vectors that hold ``share`` of their
    variance: what varies among defect-free images (layout, lighting, the product's own variants) is no defect type.
    Computed from the smaller Gram matrix (N×N or D×D), with eigenvectors only for the directions kept."""
    from scipy.linalg import eigh, eigvalsh

    c = np.asarray(normal, np.float64) - np.mean(normal, axis=0)
    wide = len(c) <= c.shape[1]
    gram = c @ c.T if wide else c.T @ c
    var = np.clip(eigvalsh(gram)[::-1], 0.0, None)
    if len(var) == 0 or var.sum() <= 0:
        return np.zeros((0, c.shape[1]))
    r = min(int(np.searchsorted(np.cumsum(var) / var.sum(), share)) + 1, len(var))
    _, u = eigh(gram, subset_by_index=[len(gram) - r, len(gram) - 1])
    v = (c.T @ u[:, ::-1]).T if wide else u[:, ::-1].T
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)


def _ward(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(x) < 2:
        return np.zeros(len(x), np.int64)
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x).astype(np.int64)


def co_association(label_sets: list[np.ndarray]) -> np.ndarray:
    """N×N share of the partitions that put each pair of images in the same cluster (float32)."""
    n = len(label_sets[0])
    co = np.zeros((n, n), np.float32)
    for labels in label_sets:
        onehot = np.zeros((n, int(labels.max()) + 1), np.float32)
        onehot[np.arange(n), labels] = 1.0
        co += onehot @ onehot.T
    return co / float(len(label_sets))


class ConsensusClusterer(_Centroids):
    """Consensus of seeded k-means runs on random feature subspaces (co-association), cut into K clusters.

    ``n_runs`` k-means partitions, each on a random ``feature_fraction`` of the dimensions with K' drawn from
    [K, ``k_factor``·K]; then Ward on the co-association rows (``final="ward"``) or average linkage on
    1 − co-association (``final="average"``) into K clusters.

    A weak view or an unlucky start counts in a few runs only, so it cannot decide the partition alone. ``seed``
    decides the subspaces and the k-means starts.
    """

    def __init__(self, n_clusters: int = 2, n_runs: int = 24, feature_fraction: float = 0.5, k_factor: float = 2.0, final: str = "ward", seed: int = 0):
        self.n_clusters = n_clusters
        self.n_runs = n_runs
        self.feature_fraction = feature_fraction
        self.k_factor = k_factor
        self.final = final
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        if self.n_runs < 1 or not 0.0 < self.feature_fraction <= 1.0 or self.k_factor < 1.0 or self.final not in ("ward", "average"):
            raise ValueError("n_runs >= 1, feature_fraction in (0, 1], k_factor >= 1 and final in {'ward', 'average'}")
        x = embeddings.image_vectors().astype(np.float32)
        k = self.n_clusters
        _check(x, k)
        rng = np.random.default_rng(self.seed)
        d = x.shape[1]
        parts = []
        for _ in range(self.n_runs):
            dims = rng.choice(d, max(1, int(round(self.feature_fraction * d))), replace=False)
            kr = int(rng.integers(k, max(k, int(np.ceil(self.k_factor * k))) + 1))
            kr = min(kr, len(x))
            parts.append(KMeans(kr, n_init=1, random_state=int(rng.integers(1 << 31))).fit_predict(x[:, dims]))
        co = co_association(parts)
        if self.final == "ward":
            labels = _ward(co.astype(np.float64), k)
        else:
            labels = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(1.0 - co)
        self._remember(x.astype(np.float64), labels)
        return Clustering(labels.astype(np.int64), k, info={"consensus_runs": self.n_runs})


def view_subsets(n_views: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``n_views`` views, smallest first."""
    from itertools import combinations

    return [c for r in range(1, n_views + 1) for c in combinations(range(n_views), r)]


class ViewSelectClusterer(_Centroids):
    """Ward on the views whose own K-partition is best separated (silhouette), chosen per set without labels.

    The embeddings' ``info["view_dims"]`` splits the vectors into views; Ward clusters every non-empty subset of
    views into K and the subset with the highest silhouette (Euclidean, on that subset's coordinates) wins, so a view
    that carries no cluster structure on a set (e.g. crops of defect-free regions, or whole-image texture where the
    defect is small) is left out there. ``max_views`` caps the subsets' size. Deterministic; ``seed`` is kept for
    the interface of seeded clusterers (silhouette subsamples beyond ``sample`` images with it).
    """

    def __init__(self, n_clusters: int = 2, max_views: int = 3, sample: int = 2000, seed: int = 0):
        self.n_clusters = n_clusters
        self.max_views = max_views
        self.sample = sample
        self.seed = seed

    def fit_predict(self, embeddings: Embeddings) -> Clustering:
        from sklearn.metrics import silhouette_score

        if self.max_views < 1 or self.sample < 10:
            raise ValueError("max_views must be >= 1 and sample >= 10")
        x = embeddings.image_vectors().astype(np.float64)
        k = self.n_clusters
        _check(x, k)
        dims = [int(d) for d in embeddings.info.get("view_dims") or [x.shape[1]]]
        if sum(dims) != x.shape[1]:
            raise ValueError(f"info['view_dims'] {dims} do not add up to the {x.shape[1]} embedding dimensions")
        edges = np.cumsum([0, *dims])
        names = list(embeddings.info.get("views") or [f"view{i}" for i in range(len(dims))])
        best: tuple[float, tuple[int, ...], np.ndarray] | None = None
        scores: dict[str, float] = {}
        sample = min(len(x), self.sample)
        for subset in [s for s in view_subsets(len(dims)) if len(s) <= self.max_views]:
            cols = np.concatenate([np.arange(edges[i], edges[i + 1]) for i in subset])
            xs = x[:, cols]
            labels = _ward(xs, k)
            n_lab = len(np.unique(labels))
            score = float(silhouette_score(xs, labels, sample_size=sample, random_state=self.seed)) if 1 < n_lab < len(x) else -1.0
            scores["+".join(names[i] for i in subset)] = round(score, 4)
            if best is None or score > best[0]:
                best = (score, subset, labels)
        assert best is not None
        labels = best[2]
        self._remember(x, labels)
        return Clustering(labels, k, info={"views_chosen": [names[i] for i in best[1]], "view_silhouettes": scores})
