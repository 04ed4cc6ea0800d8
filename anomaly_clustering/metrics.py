"""Evaluation metrics, thin over scikit-learn, SciPy and anomalib.

Clustering: NMI (arithmetic normalisation, scikit-learn's default), ARI, and F1 after the optimal one-to-one
cluster↔class assignment (SciPy's ``linear_sum_assignment`` on the contingency matrix): micro-F1 (= cluster
accuracy, the figure both papers' code reports) and macro-F1. Localization: pixel AUROC, image AUROC and PRO
integrated up to FPR 0.3 (anomalib's AUPRO, normalised so that a perfect map scores 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    adjusted_rand_score,
    f1_score,
    normalized_mutual_info_score,
    roc_auc_score,
)
from sklearn.metrics.cluster import contingency_matrix

__all__ = [
    "ClusteringScores",
    "LocalizationScores",
    "hungarian_mapping",
    "clustering_scores",
    "localization_scores",
    "pro_auc",
]


@dataclass(frozen=True)
class ClusteringScores:
    nmi: float
    ari: float
    f1_micro: float
    f1_macro: float
    n_clusters: int
    n_classes: int

    def as_dict(self) -> dict:
        return asdict(self)


def hungarian_mapping(true: np.ndarray, pred: np.ndarray) -> dict[int, int]:
    """The one-to-one map cluster → class maximising the matched count (clusters left over map to -1)."""
    true, pred = np.asarray(true), np.asarray(pred)
    classes, clusters = np.unique(true), np.unique(pred)
    table = contingency_matrix(true, pred)  # classes × clusters
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(c): -1 for c in clusters}
    for r, c in zip(rows, cols):
        mapping[int(clusters[c])] = int(classes[r])
    return mapping


def clustering_scores(true: np.ndarray, pred: np.ndarray) -> ClusteringScores:
    """NMI, ARI, micro- and macro-F1 after the optimal assignment. ``true``/``pred``: integer labels per image."""
    true, pred = np.asarray(true).astype(int), np.asarray(pred).astype(int)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"label arrays must be 1-D and equal in length, got {true.shape} and {pred.shape}")
    mapping = hungarian_mapping(true, pred)
    mapped = np.array([mapping[int(p)] for p in pred])
    classes = np.unique(true)
    return ClusteringScores(
        nmi=float(normalized_mutual_info_score(true, pred)),
        ari=float(adjusted_rand_score(true, pred)),
        f1_micro=float(np.mean(mapped == true)),  # micro-F1 over all predictions = accuracy, unmatched clusters wrong
        f1_macro=float(f1_score(true, mapped, labels=classes, average="macro", zero_division=0)),
        n_clusters=int(len(np.unique(pred))),
        n_classes=int(len(classes)),
    )


@dataclass(frozen=True)
class LocalizationScores:
    pro_30: float | None
    auroc_pixel: float | None
    auroc_image: float | None
    n_images: int
    n_anomalous: int

    def as_dict(self) -> dict:
        return asdict(self)


def pro_auc(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalised to [0, 1] (anomalib's AUPRO)."""
    import torch
    from anomalib.metrics.aupro import _AUPRO

    metric = _AUPRO(fpr_limit=fpr_limit)
    step = 256
    for s in range(0, len(maps), step):
        metric.update(torch.from_numpy(np.array(maps[s : s + step], np.float32)), torch.from_numpy(np.array(masks[s : s + step])).int())
    return float(metric.compute())


def localization_scores(
    maps: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray | None,
    is_anomalous: np.ndarray,
    fpr_limit: float = 0.3,
    max_pixels: int = 20_000_000,
    seed: int = 0,
) -> LocalizationScores:
    """Pixel AUROC and PRO@``fpr_limit`` (when masks exist: N×H×W bool at map resolution) and image AUROC (when
    both normal and anomalous images exist). Pixel AUROC subsamples uniformly beyond ``max_pixels`` pixels."""
    is_anomalous = np.asarray(is_anomalous, bool)
    auroc_image = None
    if 0 < is_anomalous.sum() < len(is_anomalous):
        auroc_image = float(roc_auc_score(is_anomalous, np.asarray(scores, np.float64)))
    pro = auroc_pixel = None
    if masks is not None and np.asarray(masks).any():
        flat_t = np.asarray(masks, bool).reshape(-1)
        flat_p = np.asarray(maps, np.float32).reshape(-1)
        if flat_t.size > max_pixels:
            idx = np.random.default_rng(seed).choice(flat_t.size, max_pixels, replace=False)
            flat_t, flat_p = flat_t[idx], flat_p[idx]
        if 0 < flat_t.sum() < flat_t.size:
            auroc_pixel = float(roc_auc_score(flat_t, flat_p))
        pro = pro_auc(maps, masks, fpr_limit)
    return LocalizationScores(pro, auroc_pixel, auroc_image, int(len(is_anomalous)), int(is_anomalous.sum()))
