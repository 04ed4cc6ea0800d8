"""How far a run's clusters can be trusted, without labels: the clusterer refitted on random subsets of the images.

A user with an unlabelled folder cannot compute NMI against the truth. What can be computed is whether the
partition is a property of the images or of the draw: refit the same clusterer, at the same K, on ``n_resamples``
random subsets of 80 % of the images and compare each refit with the run's labels on the images it shares with
them. Two figures come out (:class:`ClusterStability`):

- ``score``: the mean NMI between the run's labels and a refit's, on the shared images (1 = every refit agrees);
- ``cluster_scores``: per cluster, the mean Jaccard overlap with its best-matching refit cluster (Hennig 2007,
  *Cluster-wise assessment of cluster stability*; his reading: below 0.6 the cluster dissolves, above 0.75 it is
  stable, above 0.85 highly stable).

On the development suite (``benchmarks/stability_check.py``) the set-level score orders the sets as the gap closed
over the Average floor does, and a cluster's score orders its purity; it measures reproducibility, not
correctness: a stable partition can still split the images along something other than the defect type.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from sklearn.base import clone
from sklearn.metrics import normalized_mutual_info_score

from . import runtime
from .config import DEFAULT_STABILITY_RESAMPLES
from .records import Clustering, Embeddings

__all__ = ["ClusterStability", "SUBSET_FRACTION", "cluster_stability", "stability_reading", "subset_refits"]

#: the share of the images each refit sees (the usual choice of subsampling stability studies)
SUBSET_FRACTION = 0.8


@dataclass(frozen=True)
class ClusterStability:
    """The run's agreement with refits on random subsets: ``score`` (mean NMI, with ``score_std`` over the
    refits) and ``cluster_scores`` (per cluster, the mean best Jaccard; NaN for an empty cluster)."""

    score: float
    score_std: float
    cluster_scores: np.ndarray
    n_resamples: int
    fraction: float = SUBSET_FRACTION
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the run's ``summary.json`` entry)."""
        def num(v: float) -> float | None:
            return round(float(v), 4) if np.isfinite(v) else None

        return {"score": num(self.score), "score_std": num(self.score_std),
                "cluster_scores": [num(v) for v in np.asarray(self.cluster_scores)],
                "n_resamples": int(self.n_resamples), "fraction": float(self.fraction)}


def stability_reading(value: float) -> str:
    """Hennig's words for a cluster's stability (its mean best Jaccard): dissolved (< 0.6), doubtful (< 0.75), stable
    (< 0.85), highly stable."""
    if not np.isfinite(value):
        return "not measured"
    return "dissolved" if value < 0.6 else "doubtful" if value < 0.75 else "stable" if value < 0.85 else "highly stable"


def _best_jaccard(labels: np.ndarray, refit: np.ndarray, k: int) -> np.ndarray:
    """Per cluster of ``labels`` (0…k−1), the largest Jaccard overlap with any cluster of ``refit`` (NaN if empty)."""
    _, refit = np.unique(refit, return_inverse=True)
    both = np.zeros((k, int(refit.max()) + 1), np.int64)
    np.add.at(both, (labels, refit), 1)
    union = both.sum(1, keepdims=True) + both.sum(0, keepdims=True) - both
    jac = (both / np.maximum(union, 1)).max(1)  # a union is 0 only where both counts are 0
    return np.where(both.sum(1) > 0, jac, np.nan)


def subset_refits(clusterer: Any, embeddings: Embeddings, k: int, n_resamples: int, fraction: float = SUBSET_FRACTION,
                  seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(the sorted image indices of the subset, a clone of ``clusterer``'s labels there at K = ``k``) for each of
    ``n_resamples`` seeded random subsets of ``fraction`` of the images (the refits of :func:`cluster_stability`)."""
    from .kselect import take_embeddings

    n = embeddings.n_images
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        keep = np.sort(rng.choice(n, int(round(fraction * n)), replace=False))
        refit = clone(clusterer)
        if "n_clusters" in refit.get_params():
            refit.set_params(n_clusters=k)
        yield keep, np.asarray(refit.fit_predict(take_embeddings(embeddings, keep)).labels, np.int64)


def cluster_stability(clusterer: Any, embeddings: Embeddings, clustering: Clustering, n_resamples: int = DEFAULT_STABILITY_RESAMPLES,
                      fraction: float = SUBSET_FRACTION, seed: int = 0) -> ClusterStability:
    """Refit a clone of ``clusterer`` at the run's K on ``n_resamples`` seeded subsets of ``fraction`` of the images
    and compare each refit with ``clustering``'s labels there (see the module docstring)."""
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r}: must be an integer >= 1")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction={fraction!r}: must lie strictly between 0 and 1")
    labels = np.asarray(clustering.labels, np.int64)
    n, k = len(labels), max(int(clustering.n_clusters), int(labels.max(initial=-1)) + 1)
    size = int(round(fraction * n))
    if size <= k or size >= n:
        return ClusterStability(float("nan"), float("nan"), np.full(k, np.nan), 0, float(fraction), {"skipped": f"{n} images are too few to resample at K = {k}"})
    scores, jaccards = [], []
    for keep, sub in runtime.progress(subset_refits(clusterer, embeddings, k, n_resamples, fraction, seed), desc="cluster stability",
                                      total=n_resamples, unit="refit"):
        scores.append(normalized_mutual_info_score(labels[keep], sub))
        jaccards.append(_best_jaccard(labels[keep], sub, k))
    with warnings.catch_warnings():  # a cluster absent from every subset stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        per_cluster = np.nanmean(np.stack(jaccards), 0)
    return ClusterStability(float(np.mean(scores)), float(np.std(scores)), per_cluster, int(n_resamples), float(fraction))
