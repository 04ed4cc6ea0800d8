"""Blind-LCA's anomaly-weighted image descriptor (eq. 2) as a representation that works with any localizer."""

from __future__ import annotations

from typing import ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureArray, FeatureSpec, extract_features
from anomaly_clustering.features_ops import scale_per_instance, weighted_descriptor
from anomaly_clustering.interfaces import Representation
from anomaly_clustering.records import AnomalyMaps, Embeddings, ImageSet, Regions
from anomaly_clustering.validation import Interval, validate_params

__all__ = ["WeightedDescriptor", "MAP_NORMALIZATIONS", "normalize_maps", "feature_batches", "maps_on_grid"]

#: How anomaly maps are rescaled before softmax(map / τ). τ = 0.002 was tuned on FCA maps (values ≈ 0…0.1);
#: "minmax-set" maps the set's [min, max] to [0, FCA_RANGE] so one τ fits any localizer's value range.
MAP_NORMALIZATIONS = ("none", "minmax-set", "minmax-image")
FCA_RANGE = 0.1


def normalize_maps(maps: np.ndarray, mode: str) -> np.ndarray:
    """Maps rescaled for eq. 2: ``none`` (as given), ``minmax-set`` (the set's range → [0, 0.1], the typical span of
    FCA maps), ``minmax-image`` (each map's own range → [0, 0.1]; discards how anomalous an image is overall)."""
    if mode not in MAP_NORMALIZATIONS:
        raise ValueError(f"normalize_maps={mode!r}: choose one of {', '.join(MAP_NORMALIZATIONS)}")
    m = np.asarray(maps, np.float32)
    if mode == "none":
        return m
    axes = None if mode == "minmax-set" else (1, 2)
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    return (m - lo) / np.maximum(hi - lo, 1e-12) * FCA_RANGE


def maps_on_grid(maps: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """B×H×W maps resized (bilinear) to the feature grid, as a float tensor."""
    t = torch.from_numpy(np.ascontiguousarray(maps, np.float32))
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return t


def masks_on_grid(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """B×H×W boolean masks on the feature grid: a cell is set when at least half of the pixels it covers are."""
    m = np.asarray(masks, bool)
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    t = torch.from_numpy(m.astype(np.float32))[:, None]
    if m.shape[-2] >= size[0] and m.shape[-1] >= size[1]:  # shrinking: the share of each cell that is set
        return (F.adaptive_avg_pool2d(t, size)[:, 0] >= 0.5).numpy()
    return (F.interpolate(t, size=size, mode="nearest")[:, 0] > 0.5).numpy()  # growing: nearest cell


def feature_batches(feats: FeatureArray, batch_size: int, scale: bool, desc: str) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(indices, B×C×h×w float32 features) over the set, per-instance 0–1 scaled when ``scale``."""
    n = len(feats)
    for s in runtime.progress(range(0, n, batch_size), desc=desc, total=(n + batch_size - 1) // batch_size, unit="batch"):
        idx = np.arange(s, min(n, s + batch_size))
        f = feats.batch(idx)
        yield idx, scale_per_instance(f) if scale else f


class WeightedDescriptor(Representation):
    """Blind-LCA eq. 2: softmax(map/τ)-weighted sum of blurred, centred features; optionally with a context block.

    Works with any localizer's maps; ``normalize_maps`` puts them into the value range τ was tuned for
    (``minmax-set`` maps the set's range to [0, 0.1], about FCA's; ``none`` reproduces the paper with FCA maps).
    ``scale_features`` applies the per-instance 0–1 channel scaling of the reference implementation first. A tuple
    of several ``tau`` gives one block per temperature. ``context_weight`` > 0 appends the mean-pooled features
    (Sohn et al.'s Average) as one more block: eq. 2 describes *what the anomaly looks like*, the context block *what
    the whole image looks like*, which decides defect types that cover most of the image (NEU-DET). Blocks are
    scaled to unit mean norm over the fitted set (learned state), so each counts alike whatever its units.
    """

    uses_global_rng: ClassVar[bool] = False  # deterministic

    parameter_constraints: ClassVar[dict[str, list]] = {
        "normalize_maps": [set(MAP_NORMALIZATIONS)], "blur_sigma": [Interval(0, None, "left")],
        "context_weight": [Interval(0, None, "left")], "scale_features": [bool],
        "batch_size": [Interval(1, None, "left", integer=True)],
    }

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        layers: tuple[str, ...] = (),
        input_size: int = 512,
        tau: float | tuple[float, ...] = 0.002,
        blur_sigma: float = 2.0,
        normalize_maps: str = "minmax-set",
        scale_features: bool = True,
        context_weight: float = 0.0,
        batch_size: int = 8,
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.input_size = input_size
        self.tau = tau
        self.blur_sigma = blur_sigma
        self.normalize_maps = normalize_maps
        self.scale_features = scale_features
        self.context_weight = context_weight
        self.batch_size = batch_size

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(self.backbone, tuple(self.layers), self.input_size, self.backbone_weights)

    def _taus(self) -> list[float]:
        return [float(t) for t in (self.tau if isinstance(self.tau, (list, tuple)) else [self.tau])]

    def _blocks(self, images: ImageSet, maps: AnomalyMaps) -> list[np.ndarray]:
        """Unscaled blocks: one eq.-2 descriptor per τ, then the mean-pooled context when ``context_weight`` > 0."""
        feats = extract_features(images, self.feature_spec())
        weights = normalize_maps(maps.scored_maps, self.normalize_maps)
        taus, c = self._taus(), feats.shape[1]
        blocks = [np.empty((len(images), c), np.float32) for _ in range(len(taus) + (self.context_weight > 0))]
        for idx, f in feature_batches(feats, self.batch_size, self.scale_features, "weighted descriptor"):
            m = maps_on_grid(weights[idx], f.shape[-2:])
            for j, t in enumerate(taus):
                blocks[j][idx] = weighted_descriptor(f, m, t, self.blur_sigma).numpy()
            if self.context_weight > 0:
                blocks[-1][idx] = np.asarray(feats.data[idx], np.float32).mean(axis=(2, 3))
        return blocks

    def _combine(self, blocks: list[np.ndarray]) -> np.ndarray:
        if len(blocks) == 1:
            return blocks[0]
        parts = [(b - mu) / s for b, mu, s in zip(blocks, self.block_means_, self.block_scales_)]
        if self.context_weight > 0:
            parts[-1] = parts[-1] * float(self.context_weight)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _learn_scales(self, blocks: list[np.ndarray]) -> None:
        self.block_means_ = [b.mean(0) for b in blocks]
        self.block_scales_ = [max(float(np.linalg.norm(b - b.mean(0), axis=1).mean()), 1e-12) for b in blocks]

    def fit(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> "WeightedDescriptor":
        validate_params(self)
        self._learn_scales(self._blocks(images, maps))
        return self

    def fit_transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        validate_params(self)
        blocks = self._blocks(images, maps)
        self._learn_scales(blocks)
        return self._embeddings(self._combine(blocks))

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        return self._embeddings(self._combine(self._blocks(images, maps)))

    def _embeddings(self, x: np.ndarray) -> Embeddings:
        info = {"backbone": self.backbone, "tau": self.tau, "normalize_maps": self.normalize_maps, "context_weight": self.context_weight}
        return Embeddings.per_image(x, info)
