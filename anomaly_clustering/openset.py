"""Open-set assignment for ``predict``: a new image joins the nearest cluster only when it lies within that cluster's
calibrated radius, else it is flagged ``unknown``; a cluster named ``good`` (or ``ok``/``normal``) labels normal images.

The radius of a cluster is its median member distance to its centroid (leave-one-out: a member's distance to the
centroid of the others) times a quantile (``--reject``, default 0.99) of all members' distances divided by their
own cluster's median: each cluster keeps its own scale while the shape of the tail is pooled over every fitted
image, so a cluster of a few images still gets a usable radius. Distances are Euclidean in the embedding space the
clusters were formed in. Clusters and names are the run's current ones (after ``relabel``/``refit``).
An image the run was fitted on (same content digest) keeps its fitted label.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

from .data import GOOD_NAMES
from .labelling import LabelState, RunLabels
from .records import Clustering, Embeddings, ImageSet
from .store import atomic_write_text

__all__ = ["OpenSetAssigner", "OpenSetResult", "parse_reject", "open_set_predict", "annotate_predictions"]

UNKNOWN = "unknown"


def parse_reject(value: str | float | None) -> float | None:
    """``--reject`` → a quantile in (0, 1], or None for ``off`` (no rejection)."""
    if value is None or str(value).strip().lower() in ("off", "none", "false", "no"):
        return None
    try:
        q = float(value)
    except ValueError:
        raise ValueError(f"--reject {value}: give a quantile in (0, 1] or 'off'") from None
    if not 0 < q <= 1:
        raise ValueError(f"--reject {value}: give a quantile in (0, 1] or 'off'")
    return q


@dataclass(frozen=True)
class OpenSetResult:
    """Per image: cluster id (−1 when unknown), name (cluster name, ``good`` or ``unknown``), distance to the
    nearest centroid and that cluster's radius (inf when rejection is off), and whether it was a fitted image."""

    clusters: np.ndarray
    names: tuple[str, ...]
    distances: np.ndarray
    limits: np.ndarray
    fitted: np.ndarray

    @property
    def unknown(self) -> np.ndarray:
        return self.clusters < 0


class OpenSetAssigner:
    """Nearest-centroid assignment with per-cluster rejection radii calibrated on the fitted images."""

    def __init__(self, quantile: float | None = 0.99):
        self.quantile = quantile

    def fit(self, vectors: np.ndarray, state: LabelState) -> "OpenSetAssigner":
        if self.quantile is not None and not 0 < self.quantile <= 1:
            raise ValueError(f"quantile={self.quantile}: give a value in (0, 1] or None")
        x = np.asarray(vectors, np.float64)
        self.ids_ = np.array(state.clusters)
        self.names_ = tuple(_display(state, k) for k in self.ids_)
        self.centroids_ = np.stack([x[state.labels == k].mean(0) for k in self.ids_])
        pos = np.searchsorted(self.ids_, state.labels)
        sizes = np.bincount(pos, minlength=len(self.ids_)).astype(np.float64)
        member = np.linalg.norm(x - self.centroids_[pos], axis=1)
        member *= np.where(sizes[pos] > 1, sizes[pos] / np.maximum(sizes[pos] - 1, 1), 1.0)  # leave-one-out distance
        if self.quantile is None:
            self.radius_ = np.full(len(self.ids_), np.inf)
            return self
        scale = np.array([np.median(member[pos == j]) for j in range(len(self.ids_))])
        ratio = member / np.maximum(scale[pos], 1e-12)
        self.scale_ = scale
        self.radius_ = scale * float(np.quantile(ratio, self.quantile))
        return self

    def predict(self, vectors: np.ndarray, nearest: np.ndarray | None = None) -> OpenSetResult:
        """``nearest``: cluster ids chosen by the run's own clusterer (optional; default nearest centroid)."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("OpenSetAssigner is not fitted; call fit first")
        x = np.asarray(vectors, np.float64)
        d = cdist(x, self.centroids_) if len(x) else np.zeros((0, len(self.ids_)))
        pos = d.argmin(1) if nearest is None else np.searchsorted(self.ids_, nearest)
        dist = d[np.arange(len(x)), pos]
        limit = self.radius_[pos]
        known = dist <= limit
        clusters = np.where(known, self.ids_[pos], -1)
        names = tuple(self.names_[p] if k else UNKNOWN for p, k in zip(pos.tolist(), known.tolist()))
        return OpenSetResult(clusters, names, dist, limit, np.zeros(len(x), bool))


def _display(state: LabelState, k: int) -> str:
    name = state.names.get(int(k))
    if name and name.lower() in GOOD_NAMES:
        return "good"
    return name or f"cluster-{int(k)}"


def open_set_predict(run_dir: str | os.PathLike, images: ImageSet, embeddings: Embeddings, clustering: Clustering, quantile: float | None) -> OpenSetResult:
    """Labels for ``images`` of a ``predict``: fitted images keep their current label; others go to the nearest
    current cluster (the clusterer's own choice while no edit was applied) or ``unknown`` beyond its radius."""
    labels = RunLabels(run_dir)
    state = labels.state()
    vectors = labels.vectors()
    assigner = OpenSetAssigner(quantile).fit(vectors, state)
    edited = bool(labels.history())
    own = None if edited else np.asarray(clustering.labels)
    if own is not None and not np.isin(own, assigner.ids_).all():
        own = None
    result = assigner.predict(embeddings.image_vectors(), own)
    fitted_rows = {d: i for i, d in enumerate(labels.run.images().digests)}
    hit = np.array([d in fitted_rows for d in images.digests], bool)
    if hit.any():
        rows = np.array([fitted_rows[d] for d in np.asarray(images.digests)[hit]])
        clusters, names = result.clusters.copy(), list(result.names)
        clusters[hit] = state.labels[rows]
        for i, r in zip(np.flatnonzero(hit), rows):
            names[i] = _display(state, state.labels[r])
        result = OpenSetResult(clusters, tuple(names), result.distances, result.limits, hit)
    return result


def annotate_predictions(csv_path: str | os.PathLike, result: OpenSetResult) -> Path:
    """Add the columns ``name``, ``distance``, ``limit`` and ``fitted`` to a predictions.csv (rows in image order)."""
    path = Path(csv_path)
    rows = list(csv.reader(io.StringIO(path.read_text())))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*rows[0], "name", "distance", "limit", "fitted"])
    for row, k, name, d, lim, fit in zip(rows[1:], result.clusters.tolist(), result.names, result.distances.tolist(), result.limits.tolist(), result.fitted.tolist()):
        row[1] = str(int(k))
        w.writerow([*row, name, f"{d:.6g}", f"{lim:.6g}", int(fit)])
    atomic_write_text(path, buf.getvalue())
    return path
