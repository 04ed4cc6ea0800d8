"""Blind-LCA's set-level threshold heuristic (supplementary S4): the share of the "good" cluster sets the quantile."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.cluster import KMeans

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec, extract_features
from anomaly_clustering.features_ops import scale_per_instance, weighted_descriptor
from anomaly_clustering.interfaces import Binarizer
from anomaly_clustering.records import AnomalyMaps, ImageSet, Regions
from anomaly_clustering.regions import masks_to_regions
from anomaly_clustering.validation import Interval, check_is_fitted, validate_params


class QuantileHeuristic(Binarizer):
    """Blind-LCA S4: k-means on eq.-2 descriptors; the lowest-scoring cluster's share q sets t = q-quantile of max scores.

    The descriptors (eq. 2: per-instance scaled features, blurred σ = ``blur_sigma`` and centred, weighted by
    softmax(map / ``tau``)) are clustered with k-means into ``n_clusters`` groups (the pipeline fills it with the
    number of classes, as in the authors' code) — or into ``heuristic_k`` groups when set (2: "defect-free or not").
    The cluster with the lowest mean image score is taken as defect-free; its share q of the set gives the threshold
    t = the q-quantile of the per-image max scores, one t for the whole set.
    """

    uses_global_rng: ClassVar[bool] = False  # k-means seeded from its own seed

    parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval(1, None, "left", integer=True)], "tau": [Interval(0, None)],
        "blur_sigma": [Interval(0, None, "left")], "min_area": [Interval(1, None, "left", integer=True)],
        "heuristic_k": [None, Interval(1, None, "left", integer=True)],
    }

    def __init__(
        self,
        n_clusters: int = 2,
        tau: float = 0.002,
        blur_sigma: float = 2.0,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 512,
        layers: tuple[str, ...] = (),
        min_area: int = 1,
        seed: int = 42,
        heuristic_k: int | None = None,
    ):
        self.n_clusters = n_clusters
        self.heuristic_k = heuristic_k
        self.tau = tau
        self.blur_sigma = blur_sigma
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.input_size = input_size
        self.layers = layers
        self.min_area = min_area
        self.seed = seed

    def descriptors(self, maps: AnomalyMaps, images: ImageSet, batch_size: int = 16) -> np.ndarray:
        """Eq.-2 descriptors (N×C) of the set's scaled backbone features weighted by its maps."""
        feats = extract_features(images, FeatureSpec(self.backbone, tuple(self.layers), self.input_size, self.backbone_weights))
        out = np.empty((len(images), feats.shape[1]), np.float32)
        for s in runtime.progress(range(0, len(images), batch_size), desc="quantile-heuristic descriptors", unit="batch"):
            idx = np.arange(s, min(len(images), s + batch_size))
            f = scale_per_instance(feats.batch(idx))
            m = torch.from_numpy(np.asarray(maps.maps[idx], np.float32))
            out[idx] = weighted_descriptor(f, m, self.tau, self.blur_sigma).numpy()
        return out

    def fit(self, maps: AnomalyMaps, images: ImageSet) -> "QuantileHeuristic":
        validate_params(self)
        scores = np.asarray(maps.scores, np.float64)
        k = int(min(max(1, self.heuristic_k or self.n_clusters), len(scores)))
        labels = KMeans(k, random_state=self.seed, n_init=10).fit_predict(self.descriptors(maps, images)) if k > 1 else np.zeros(len(scores), int)
        self.threshold_, self.good_share_, self.cluster_mean_scores_ = quantile_threshold(scores, labels)
        return self

    def transform(self, maps: AnomalyMaps, images: ImageSet) -> Regions:
        check_is_fitted(self, "threshold_")
        masks = np.asarray(maps.maps) > self.threshold_
        masks, regions = masks_to_regions(masks, maps.maps, self.min_area)
        info = {"method": "quantile-heuristic", "good_share": self.good_share_, "threshold": self.threshold_, "kmeans_k": len(self.cluster_mean_scores_)}
        return Regions(masks, np.full(len(maps), self.threshold_, np.float32), regions, info)


def quantile_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, dict[int, float]]:
    """(t, q, mean score per cluster): q = share of the cluster with the lowest mean score, t = q-quantile of scores."""
    means = {int(c): float(scores[labels == c].mean()) for c in np.unique(labels)}
    good = min(means, key=means.get)
    q = float(np.mean(labels == good))
    return float(np.quantile(scores, q)), q, means
