"""Sohn et al. (WACV 2023) anomaly-clustering baselines on the shared backbone features."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec, extract_features
from anomaly_clustering.interfaces import Representation
from anomaly_clustering.records import AnomalyMaps, Embeddings, ImageSet, Regions


class AveragePooling(Representation):
    """Sohn et al.'s Average: spatially mean-pooled backbone features (ignores the maps; the floor to beat)."""

    uses_global_rng: ClassVar[bool] = False  # deterministic

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


# ------------------------------------------------------------------ patch-bag baselines (quadratic in images)
def pooled_patches(feats, grid: int, batch_size: int = 32) -> torch.Tensor:
    """Each image as a bag of patch embeddings: features average-pooled to at most ``grid``×``grid`` cells
    (N×P×C float32, P = cells). The pooling is what keeps the N²·P² pair cost affordable."""
    n, c, h, w = feats.shape
    gh, gw = min(grid, h), min(grid, w)
    out = torch.empty(n, gh * gw, c)
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(n, s + batch_size))
        f = F.adaptive_avg_pool2d(feats.batch(idx), (gh, gw))
        out[idx] = f.flatten(2).transpose(1, 2)
    return out


def nearest_patch_reductions(bags: torch.Tensor, chunk: int = 8, desc: str = "patch distances") -> tuple[torch.Tensor, torch.Tensor]:
    """For every ordered pair of images (a, b), a ≠ b, the distance of each patch of a to its nearest patch of b,
    reduced two ways: ``directed[a, b]`` = max over a's patches (N×N, the directed Hausdorff distance; 0 on the
    diagonal) and ``mean_nearest[a, i]`` = mean over b ≠ a (N×P). Batched in ``chunk``×``chunk`` image blocks, one
    ``torch.cdist`` each: time O(N²·P²·C), memory O(N² + N·P + chunk²·P²)."""
    n, p, c = bags.shape
    dev = runtime.device()
    directed = torch.zeros(n, n)
    total = torch.zeros(n, p)
    starts = range(0, n, chunk)
    for a0 in runtime.progress(starts, desc=desc, total=len(starts), unit="chunk"):
        a = bags[a0 : a0 + chunk].to(dev)
        ea = a.shape[0]
        for b0 in starts:
            b = bags[b0 : b0 + chunk].to(dev)
            eb = b.shape[0]
            near = torch.cdist(a.reshape(ea * p, c), b.reshape(eb * p, c)).view(ea, p, eb, p).amin(dim=3)  # ea×P×eb
            same = torch.arange(a0, a0 + ea, device=dev)[:, None] == torch.arange(b0, b0 + eb, device=dev)[None]
            near = near.masked_fill(same[:, None, :], 0.0)
            directed[a0 : a0 + ea, b0 : b0 + eb] = near.amax(dim=1).cpu()
            total[a0 : a0 + ea] += near.sum(dim=2).cpu()
    return directed, total / max(n - 1, 1)


def classical_mds(dist: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Torgerson's classical MDS: Euclidean coordinates whose distances best match ``dist`` (N×N), keeping the
    positive-eigenvalue directions, so Ward / k-means can cluster a set known only by pairwise distances."""
    d2 = np.asarray(dist, np.float64) ** 2
    n = len(d2)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ d2 @ j
    vals, vecs = np.linalg.eigh(b)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    keep = vals > 1e-9 * max(vals[0], 1e-12)
    if n_components is not None:
        keep[n_components:] = False
    return (vecs[:, keep] * np.sqrt(vals[keep])).astype(np.float32)


class _PatchBagBaseline(Representation):
    """Shared options of Sohn et al.'s bag-of-patches baselines."""

    uses_global_rng: ClassVar[bool] = False  # deterministic

    def __init__(self, backbone: str = DEFAULT_BACKBONE, backbone_weights: str | None = None, layers: tuple[str, ...] = (), input_size: int = 512, grid: int = 16, chunk: int = 8):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.input_size = input_size
        self.grid = grid
        self.chunk = chunk

    def _bags(self, images: ImageSet) -> torch.Tensor:
        spec = FeatureSpec(self.backbone, tuple(self.layers), self.input_size, self.backbone_weights)
        if len(images) < 2:
            raise ValueError(f"{type(self).__name__} compares images with each other: it needs at least 2 images, got {len(images)}")
        return pooled_patches(extract_features(images, spec), self.grid)


class MaxHausdorff(_PatchBagBaseline):
    """Sohn et al.'s Max Hausdorff: symmetric Hausdorff distance between images' patch bags, embedded by MDS.

    d(X, Y) = max(max_i min_j ‖x_i − y_j‖, max_j min_i ‖x_i − y_j‖) over patch embeddings pooled to
    ``grid``×``grid`` cells; the N×N distances are turned into Euclidean coordinates (classical MDS) so that any
    clusterer can use them. Time grows as N²·P²·C (N images, P = grid² patches, C channels; batched ``cdist`` in
    ``chunk``×``chunk`` image blocks), memory as N². Transductive: the coordinates describe one set, so
    ``transform`` only accepts the set it was fitted on (refit to add images).
    """

    supports_new_images = False

    def fit(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> "MaxHausdorff":
        self.fitted_fingerprint_ = images.fingerprint()
        return self

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        if getattr(self, "fitted_fingerprint_", images.fingerprint()) != images.fingerprint():
            raise ValueError("max-hausdorff embeds a whole set at once (MDS of pairwise distances); it cannot place new images: refit with them included")
        directed, _ = nearest_patch_reductions(self._bags(images), self.chunk, "max-hausdorff")
        dist = torch.maximum(directed, directed.T).numpy()
        return Embeddings.per_image(classical_mds(dist), {"method": "max-hausdorff + classical MDS", "grid": self.grid})


class WeightedAverage(_PatchBagBaseline):
    """Sohn et al.'s Weighted Average: patch embeddings averaged with soft weights from their distances to the other images.

    A patch's score is its mean, over the other images of the set, of the distance to that image's nearest patch
    (normal texture finds a close match almost everywhere; a defect only in images with the same defect); the
    weights are softmax(score / (τ · median score)) within each image, so τ is free of the feature scale. Time grows
    as N²·P²·C (all image pairs, batched ``cdist``), memory as N² + N·P. ``transform`` weighs any set against itself
    (the set should hold more than a handful of images).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, backbone_weights: str | None = None, layers: tuple[str, ...] = (), input_size: int = 512, grid: int = 16, chunk: int = 8, tau: float = 0.1):
        super().__init__(backbone, backbone_weights, layers, input_size, grid, chunk)
        self.tau = tau

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        bags = self._bags(images)
        _, score = nearest_patch_reductions(bags, self.chunk, "weighted-average")  # N×P
        weights = torch.softmax(score / (self.tau * score.median().clamp_min(1e-12)), dim=1)
        vectors = torch.einsum("npc,np->nc", bags, weights).numpy()
        return Embeddings.per_image(vectors, {"method": "weighted average", "grid": self.grid, "tau": self.tau})
