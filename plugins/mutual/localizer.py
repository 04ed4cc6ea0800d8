"""The mutual localizer: each patch is scored against the patches of *other* images of the set (MuSc-style mutual
scoring over a sampled reference subset), so what every image shares (an object's outline, its background, a
texture) scores low and what only a few images have scores high."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureArray, FeatureSpec, extract_features, get_backbone
from anomaly_clustering.data import image_size
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet

from .search import NearestPatchIndex
from .torch_model import (
    DEFAULT_MAX_ELEMENTS,
    aggregate,
    fit_projection,
    gaussian_blur,
    image_scores,
    mutual_scores,
    normalize_layers,
    robust_scale,
    self_scores,
)

#: How patch vectors are put on one scale: ``layer`` (each backbone layer LayerNorm-ed and weighted 1/√C, MuSc's) or
#: ``l2`` (each patch vector to unit length: cosine distances, as FCA's features are compared in ``fca-nearest``).
NORMALIZATIONS = ("layer", "l2")
#: How the nearest reference patches are found: ``exact`` (every reference patch, torch) or ``ivf`` (a faiss
#: inverted-file index, ``nprobe`` of ``nlist`` cells; only for the single-nearest score, ``quantile`` × M ≤ 1).
SEARCHES = ("exact", "ivf")

_BLOCK = 128  # images per block when normalising / scoring (bounds memory at any set size)


class MutualLocalizer(Localizer):
    """Blind mutual scoring: every patch against its nearest patches in a sampled subset of the *other* images.

    Backbone features (the shared on-disk cache) are LayerNorm-ed per layer, aggregated over r×r neighbourhoods
    (``degrees``); a patch's score is the mean of its ``quantile`` smallest per-image nearest-patch distances to
    ``reference_images`` images sampled from the set (``seed``; each image excluded from its own reference), so the
    cost is linear in the set size. Maps are upsampled to ``map_size`` and smoothed (``sigma``, in feature cells);
    the image score is the mean of the map's top ``top_fraction`` (robust where the max is not). With
    ``normal_images`` the reference is sampled from those clean images instead ("reference" mode). ``pool`` averages
    the feature grid ``pool``×``pool`` first (fewer, coarser patches); ``normalize="l2"`` compares unit-length patch
    vectors (cosine) instead of per-layer LayerNorm-ed ones (:data:`NORMALIZATIONS`; ``fca-nearest``'s member).
    ``search="ivf"`` finds the nearest reference patch through a faiss inverted-file index (``nlist`` coarse cells,
    0 = ≈ 4·√(reference patches); ``nprobe`` of them searched, ``seed`` for its k-means) instead of comparing with
    every reference patch: for the single-nearest score only (``quantile`` × ``reference_images`` ≤ 1), an order of
    magnitude faster at 512 px, the same maps up to the index's recall (benchmarks/README.md).

    Within-image evidence (``self_weight`` > 0; issue #19): a patch is also scored against its own image's patches
    farther than ``self_radius`` cells (mean of the smallest ``self_quantile`` share of those distances): a defect
    rare inside its own image scores high even where other images share it (mutual scoring matches it away), but so
    does an object's outline. Both scores are put on one scale by the median / MAD of each over the reference images
    (learned at fit: ``scales_``), then mixed as (1 − ``self_weight``)·mutual + ``self_weight``·within-image
    (``self_weight`` = 1: within-image alone). A ``self_radius`` that leaves no patch to compare with on the feature
    grid fails at fit, once the grid is known. Figures: benchmarks/README.md (sharper DeepPCB / MTD pixels, a
    weaker bottle image ranking: off by default).
    """

    uses_global_rng: ClassVar[bool] = False  # reference draw and projection sample come from its own ``seed``

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 128,
        layers: tuple[str, ...] = (),
        degrees: tuple[int, ...] = (1, 3),
        quantile: float = 0.3,
        reference_images: int = 64,
        projection_dim: int = 0,
        sigma: float = 1.0,
        top_fraction: float = 0.01,
        median_weight: float = 0.75,
        self_weight: float = 0.0,
        self_radius: int = 2,
        self_quantile: float = 0.5,
        map_size: int | None = None,
        pool: int = 1,
        normalize: str = "layer",
        search: str = "exact",
        nlist: int = 0,
        nprobe: int = 32,
        device: str | None = None,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        seed: int = 0,
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.input_size = input_size
        self.layers = layers
        self.degrees = degrees
        self.quantile = quantile
        self.reference_images = reference_images
        self.projection_dim = projection_dim
        self.sigma = sigma
        self.top_fraction = top_fraction
        self.median_weight = median_weight
        self.self_weight = self_weight
        self.self_radius = self_radius
        self.self_quantile = self_quantile
        self.map_size = map_size
        self.pool = pool
        self.normalize = normalize
        self.search = search
        self.nlist = nlist
        self.nprobe = nprobe
        self.device = device
        self.max_elements = max_elements
        self.seed = seed

    # -- validation and helpers ---------------------------------------------------------------------------------
    def _validate(self) -> None:
        if int(self.input_size) < 32:
            raise ValueError(f"MutualLocalizer: input_size must be >= 32, got {self.input_size}")
        if not self.degrees or any(int(r) < 1 or int(r) % 2 == 0 for r in self.degrees):
            raise ValueError(f"MutualLocalizer: degrees must be odd integers >= 1, got {self.degrees}")
        if not 0 < float(self.quantile) <= 1:
            raise ValueError(f"MutualLocalizer: quantile must be in (0, 1], got {self.quantile}")
        if int(self.reference_images) < 1:
            raise ValueError(f"MutualLocalizer: reference_images must be >= 1, got {self.reference_images}")
        if int(self.projection_dim) < 0 or float(self.sigma) < 0 or not 0 <= float(self.top_fraction) <= 1:
            raise ValueError("MutualLocalizer: projection_dim >= 0, sigma >= 0 and 0 <= top_fraction <= 1 are required")
        if not 0 <= float(self.median_weight) <= 1:
            raise ValueError(f"MutualLocalizer: median_weight must be in [0, 1], got {self.median_weight}")
        if not 0 <= float(self.self_weight) <= 1:
            raise ValueError(f"MutualLocalizer: self_weight must be in [0, 1], got {self.self_weight}")
        if int(self.self_radius) < 0 or int(self.self_radius) != self.self_radius:
            raise ValueError(f"MutualLocalizer: self_radius must be an integer >= 0, got {self.self_radius}")
        if not 0 < float(self.self_quantile) <= 1:
            raise ValueError(f"MutualLocalizer: self_quantile must be in (0, 1], got {self.self_quantile}")
        if self.map_size is not None and int(self.map_size) < 1:
            raise ValueError(f"MutualLocalizer: map_size must be positive, got {self.map_size}")
        if isinstance(self.pool, bool) or int(self.pool) != self.pool or int(self.pool) < 1:
            raise ValueError(f"MutualLocalizer: pool must be an integer >= 1, got {self.pool}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"MutualLocalizer: normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.search not in SEARCHES:
            raise ValueError(f"MutualLocalizer: search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        for name in ("nlist", "nprobe"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or int(v) < (0 if name == "nlist" else 1):
                raise ValueError(f"MutualLocalizer: {name} must be an integer >= {0 if name == 'nlist' else 1}, got {v}")
        if self.search == "ivf" and float(self.quantile) * int(self.reference_images) > 1:
            raise ValueError("MutualLocalizer: search='ivf' finds the single nearest patch; it needs quantile × reference_images "
                             f"<= 1 (got {self.quantile} × {self.reference_images}): use search='exact' for the interval average")
        self._device()

    def _device(self) -> torch.device:
        """The explicit ``device`` when given (``cpu``, ``cuda``, ``cuda:1``), else the run's device."""
        return runtime.resolve_device(self.device) if self.device else runtime.device()

    def _spec(self) -> FeatureSpec:
        return FeatureSpec(self.backbone or DEFAULT_BACKBONE, tuple(str(x) for x in self.layers), int(self.input_size), self.backbone_weights)

    def _patches(self, feats: FeatureArray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        """B×P×D patch vectors of images ``rows`` (normalised, aggregated, projected), float32 on ``device``."""
        x = feats.batch(rows.tolist()).to(device)
        if int(self.pool) > 1:
            x = F.avg_pool2d(x, int(self.pool))
        z = aggregate(normalize_layers(x, self.channels_) if self.normalize == "layer" else x, [int(r) for r in self.degrees])
        z = z.flatten(2).transpose(1, 2)
        if self.normalize == "l2":
            z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        if self.projection_ is not None:
            mean, axes = (t.to(device) for t in self.projection_)
            z = (z - mean) @ axes
        return z.contiguous()

    # -- Localizer API -------------------------------------------------------------------------------------------
    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "MutualLocalizer":
        """Sample the reference subset (from ``normal_images`` when given, else from the set) and keep its patches."""
        self._validate()
        start = time.perf_counter()
        reference = normal_images if normal_images is not None and len(normal_images) else images
        if len(reference) == 0:
            raise ValueError("MutualLocalizer: fit needs at least one image")
        device = self._device()
        spec = self._spec()
        feats = extract_features(reference, spec)
        self.channels_ = tuple(int(c) for c in get_backbone(spec).channels)
        rng = np.random.default_rng(self.seed)
        keep = np.sort(rng.choice(len(reference), min(int(self.reference_images), len(reference)), replace=False))
        self.projection_ = None
        ref = torch.cat([self._patches(feats, keep[s : s + _BLOCK], device).cpu() for s in range(0, len(keep), _BLOCK)])
        if self.projection_dim and self.projection_dim < ref.shape[-1]:
            gen = torch.Generator().manual_seed(self.seed)
            flat = ref.reshape(-1, ref.shape[-1])
            sample = flat[torch.randperm(len(flat), generator=gen)[:20000]]
            self.projection_ = fit_projection(sample, int(self.projection_dim))
            ref = (ref - self.projection_[0]) @ self.projection_[1]
        self.reference_ = ref.half()  # M×P×D, CPU, pickled with the run
        self.reference_digests_ = tuple(reference.digests[i] for i in keep)
        self.grid_ = tuple(int(v) // int(self.pool) for v in feats.shape[-2:])
        self.scales_ = self._scales(device) if float(self.self_weight) > 0 else None
        self.mode_ = "mutual" if reference is images else "reference"
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _self(self, z: torch.Tensor) -> torch.Tensor:
        """Within-image scores (B×P, CPU) of patch vectors ``z`` on the fitted grid."""
        return self_scores(z, self.grid_, int(self.self_radius), float(self.self_quantile), int(self.max_elements))

    def _scales(self, device: torch.device) -> tuple[tuple[float, float], tuple[float, float]]:
        """(median, MAD) of the mutual and of the within-image scores of the reference images themselves (each
        scored against the other references): the per-set scales that make the two kinds of evidence comparable."""
        ref = self.reference_.to(device, torch.float32)
        own = torch.arange(len(ref))
        needed = len(ref) > 1 and float(self.self_weight) < 1  # a single reference has no other image to be scored against
        mutual = mutual_scores(ref, ref, own, float(self.quantile), int(self.max_elements), device) if needed else torch.zeros(1)
        return robust_scale(mutual), robust_scale(self._self(ref))

    def _combine(self, mutual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(1 − w)·mutual + w·within-image, each standardised by its reference median / MAD (``scales_``)."""
        w = float(self.self_weight)
        if not w:
            return mutual
        if getattr(self, "scales_", None) is None:
            raise RuntimeError("MutualLocalizer: self_weight was set after fit; fit again to learn the scales")
        (m_med, m_mad), (s_med, s_mad) = self.scales_
        within = w * (self._self(z) - s_med) / s_mad
        return within if w == 1 else (1 - w) * (mutual - m_med) / m_mad + within

    def predict(self, images: ImageSet) -> AnomalyMaps:
        if not hasattr(self, "reference_"):
            raise RuntimeError("MutualLocalizer.predict before fit: call fit (or fit_predict) on the set first")
        start = time.perf_counter()
        device = self._device()
        feats = extract_features(images, self._spec())
        t_feat = time.perf_counter() - start
        h, w = (int(v) // int(self.pool) for v in feats.shape[-2:])
        side = int(self.map_size) if self.map_size else max(h, int(self.input_size) // 2)
        lookup = {d: j for j, d in enumerate(self.reference_digests_)}
        exclude = torch.tensor([lookup.get(d, -1) for d in images.digests], dtype=torch.long)
        reference = self.reference_.to(device, torch.float32)
        scoring = float(self.self_weight) < 1
        index = NearestPatchIndex(reference, int(self.nlist), int(self.nprobe), int(self.seed)) if scoring and getattr(self, "search", "exact") == "ivf" else None
        maps = torch.empty(len(images), side, side)
        blocks = list(range(0, len(images), _BLOCK))
        for s in runtime.progress(blocks, desc="mutual scoring", unit="block"):
            rows = np.arange(s, min(len(images), s + _BLOCK))
            z = self._patches(feats, rows, device)
            if index is not None:
                scores = index.distances(z, exclude[rows])
            elif scoring:
                scores = mutual_scores(z, reference, exclude[rows], float(self.quantile), int(self.max_elements), device)
            else:  # within-image evidence alone: no mutual scoring
                scores = torch.zeros(len(rows), h * w)
            scores = self._combine(scores, z)
            m = F.interpolate(scores.view(len(rows), 1, h, w).to(device), size=(side, side), mode="bilinear", align_corners=False)[:, 0]
            maps[s : s + len(rows)] = gaussian_blur(m, float(self.sigma) * side / w).cpu()
        scores = image_scores(maps, float(self.top_fraction), float(self.median_weight))
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        info = {
            "method": "mutual", "mode": self.mode_, "backbone": self._spec().backbone, "input_size": int(self.input_size),
            "reference_images": len(self.reference_digests_), "self_weight": float(self.self_weight), "device": str(device),
            "search": getattr(self, "search", "exact"),
            "timings": {"fit_s": self.fit_seconds_, "features_s": t_feat, "total_predict_s": time.perf_counter() - start},
        }
        return AnomalyMaps(maps.numpy().astype(np.float32), scores.numpy().astype(np.float32), sizes, info)
