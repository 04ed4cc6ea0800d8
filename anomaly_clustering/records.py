"""The typed records that flow one way through the pipeline.

images ─► ImageSet ─Localizer─► AnomalyMaps ─Binarizer─► Regions ─Representation─► Embeddings ─Clusterer─► Clustering

Each record is a small frozen dataclass of NumPy arrays (which may be memory-mapped from the on-disk store) plus
metadata, so that a stage never needs another stage's internals. This module imports nothing from the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["ImageSet", "AnomalyMaps", "Region", "Regions", "Embeddings", "Clustering", "map_interior"]


@dataclass(frozen=True)
class ImageSet:
    """An ordered set of image files. ``names`` are paths relative to ``root`` (stable identifiers for outputs);
    ``digests`` are content hashes, used for cache keys, so renaming the folder does not invalidate the cache."""

    root: str
    names: tuple[str, ...]
    digests: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.digests):
            raise ValueError("ImageSet: names and digests differ in length")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def paths(self) -> list[str]:
        """Absolute paths of the images, in set order."""
        import os

        return [os.path.join(self.root, n) for n in self.names]

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        """The images at ``indices`` (in that order)."""
        return ImageSet(self.root, tuple(self.names[i] for i in indices), tuple(self.digests[i] for i in indices))

    def fingerprint(self) -> str:
        """Hash of the set's contents (order included): the cache key of everything derived from it."""
        import hashlib

        h = hashlib.sha256()
        for d in self.digests:
            h.update(d.encode())
        return h.hexdigest()[:32]


@dataclass(frozen=True)
class AnomalyMaps:
    """One float anomaly map per image, all at one working resolution (``maps``: N×H×W, higher = more anomalous),
    and one image-level score per image. ``image_sizes`` (N×2, height, width) lets outputs go back to each
    image's own size."""

    maps: np.ndarray
    scores: np.ndarray
    image_sizes: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.maps.ndim != 3:
            raise ValueError(f"AnomalyMaps.maps must be N×H×W, got shape {self.maps.shape}")
        n = self.maps.shape[0]
        if self.scores.shape != (n,):
            raise ValueError(f"AnomalyMaps.scores must have shape ({n},), got {self.scores.shape}")
        if self.image_sizes.shape != (n, 2):
            raise ValueError(f"AnomalyMaps.image_sizes must have shape ({n}, 2), got {self.image_sizes.shape}")

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def map_size(self) -> tuple[int, int]:
        return int(self.maps.shape[1]), int(self.maps.shape[2])

    @property
    def scored_maps(self) -> np.ndarray:
        """The maps as the image scores read them, for the stages that describe images by their maps: where the
        localizer leaves a frame of ``info["score_border"]`` cells out of its scores (``fca-vae-frame``), that frame
        set to 0, as ``fca-vae`` zeroes it; otherwise the maps themselves."""
        b = int(self.info.get("score_border") or 0)
        interior = map_interior(self.maps, b)
        if interior is self.maps:
            return self.maps
        inner = np.zeros_like(self.maps)
        inner[:, b:-b, b:-b] = interior
        return inner


def map_interior(maps: np.ndarray, border: int | None) -> np.ndarray:
    """N×H×W maps without a ``border``-cell frame (a view); the maps themselves when there is no frame or it would
    leave nothing — the one rule of a localizer's ``score_border`` and :attr:`AnomalyMaps.scored_maps`."""
    b = int(border or 0)
    return maps[:, b:-b, b:-b] if b and min(maps.shape[1:]) > 2 * b else maps


@dataclass(frozen=True)
class Region:
    """One connected anomalous region (or a crop around it). ``box`` is (x0, y0, x1, y1) in map pixel
    coordinates, end-exclusive; ``area`` is its pixel count in the mask; ``score`` its max anomaly value."""

    image_index: int
    box: tuple[int, int, int, int]
    area: int
    score: float


@dataclass(frozen=True)
class Regions:
    """Binary masks at map resolution (N×H×W bool), the threshold used for each image, and the regions found.
    ``threshold`` may be the same value for every image (a set-level threshold)."""

    masks: np.ndarray
    thresholds: np.ndarray
    regions: tuple[Region, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks.ndim != 3:
            raise ValueError(f"Regions.masks must be N×H×W, got shape {self.masks.shape}")
        if self.thresholds.shape != (self.masks.shape[0],):
            raise ValueError(f"Regions.thresholds must have shape ({self.masks.shape[0]},)")

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def regions_of(self, image_index: int) -> list[Region]:
        return [r for r in self.regions if r.image_index == image_index]


#: ``Embeddings.info`` entries that hold one value per image (in set order): they follow the images when a subset of
#: the embeddings is taken (e.g. one copy of each pixel-identical image), so a clusterer that reads them stays aligned.
PER_IMAGE_INFO = ("image_scores", "has_region")


@dataclass(frozen=True)
class Embeddings:
    """Embedding vectors (M×D). ``image_index`` (M,) maps each row to its image, so a representation may give one
    row per image or one per region; ``weights`` (M,) say how much each row counts when rows are merged back to
    images. ``n_images`` is the size of the image set; ``info`` entries named in :data:`PER_IMAGE_INFO` hold one
    value per image."""

    vectors: np.ndarray
    image_index: np.ndarray
    n_images: int
    weights: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"Embeddings.vectors must be M×D, got shape {self.vectors.shape}")
        if self.image_index.shape != (self.vectors.shape[0],):
            raise ValueError("Embeddings.image_index must have one entry per row")
        if self.weights is not None and self.weights.shape != (self.vectors.shape[0],):
            raise ValueError("Embeddings.weights must have one entry per row")
        if self.vectors.shape[0] and (self.image_index.min() < 0 or self.image_index.max() >= self.n_images):
            raise ValueError("Embeddings.image_index out of range")

    @classmethod
    def per_image(cls, vectors: np.ndarray, info: dict[str, Any] | None = None) -> "Embeddings":
        """One row per image, in set order."""
        vectors = np.asarray(vectors, dtype=np.float32)
        return cls(vectors, np.arange(len(vectors)), len(vectors), None, dict(info or {}))

    @property
    def is_per_image(self) -> bool:
        return self.vectors.shape[0] == self.n_images and bool(np.all(self.image_index == np.arange(self.n_images)))

    def image_vectors(self) -> np.ndarray:
        """One vector per image: rows merged by their weights (weighted mean); an image without rows gets zeros."""
        if self.is_per_image:
            return np.asarray(self.vectors, dtype=np.float32)
        w = np.ones(len(self.image_index), np.float64) if self.weights is None else np.asarray(self.weights, np.float64)
        out = np.zeros((self.n_images, self.vectors.shape[1]), np.float64)
        np.add.at(out, self.image_index, self.vectors * w[:, None])
        total = np.bincount(self.image_index, weights=w, minlength=self.n_images)
        out[total > 0] /= total[total > 0, None]
        return out.astype(np.float32)


@dataclass(frozen=True)
class Clustering:
    """One label per image (0…K−1), the number of clusters, and how K was chosen (``k_curve``: K → score when it
    was estimated). ``probabilities`` (N×K) when the method gives them."""

    labels: np.ndarray
    n_clusters: int
    k_curve: dict[int, float] = field(default_factory=dict)
    k_method: str = "given"
    probabilities: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels.ndim != 1:
            raise ValueError("Clustering.labels must be one-dimensional")
