"""Sohn et al. (WACV 2023) anomaly-clustering baselines on the shared backbone features."""

from __future__ import annotations

import numpy as np

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec, extract_features
from anomaly_clustering.interfaces import Representation
from anomaly_clustering.records import AnomalyMaps, Embeddings, ImageSet, Regions


class AveragePooling(Representation):
    """Sohn et al.'s Average: spatially mean-pooled backbone features (ignores the maps; the floor to beat)."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, backbone_weights: str | None = None, layers: tuple[str, ...] = (), input_size: int = 512):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.input_size = input_size

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        spec = FeatureSpec(self.backbone, tuple(self.layers), self.input_size, self.backbone_weights)
        feats = extract_features(images, spec)
        out = np.empty((len(images), feats.shape[1]), np.float32)
        for s in runtime.progress(range(0, len(images), 64), desc="average pooling", unit="batch"):
            idx = np.arange(s, min(len(images), s + 64))
            out[idx] = np.asarray(feats.data[idx], np.float32).mean(axis=(2, 3))
        return Embeddings.per_image(out, {"backbone": self.backbone, "input_size": self.input_size})
