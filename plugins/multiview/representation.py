"""Multi-view image descriptor: the whole image's deep texture statistics beside a full-resolution crop of its anomaly."""

from __future__ import annotations

import numpy as np

from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec
from anomaly_clustering.plugins.blind_lca.descriptor import WeightedDescriptor
from anomaly_clustering.interfaces import Representation
from anomaly_clustering.records import AnomalyMaps, Embeddings, ImageSet, Regions

from .clusterers import otsu_split
from .views import VIEW_KINDS, anomaly_boxes, view_vectors

#: The views a descriptor can hold: ``anomaly`` (eq. 2) beside the pooled views of :mod:`.views`.
VIEWS = ("anomaly", *VIEW_KINDS)

#: Per-image weights of the crop view: ``none`` (every image), ``score`` (images whose score lies above Otsu's split of
#: the set's log image scores; the others keep their context only), ``mask`` (images the binarizer gave a region).
CROP_GATES = ("none", "score", "mask")

#: Per-view transforms applied after centring, before each view is scaled to unit mean norm: ``none``; ``l2`` (every
#: image's view to unit norm: its direction only); ``ssqrt`` (signed square root: damps a few dominant channels);
#: ``ssqrt-l2`` (the signed square root, then every image's view to unit norm: the power and L2 normalisation of
#: Perronnin et al. 2010's improved Fisher vectors, so neither a few bursty channels nor one image's overall strength
#: decides its distances); ``pca`` (the view's first ``view_dims`` principal components, ``whiten``-ed or not: a wide
#: view cannot dominate by its number of channels, and its noisy tail is dropped).
VIEW_TRANSFORMS = ("none", "l2", "ssqrt", "ssqrt-l2", "pca")

__all__ = ["MultiViewDescriptor", "CROP_GATES", "VIEWS", "VIEW_TRANSFORMS", "fit_view_transform", "apply_view_transform"]


def fit_view_transform(block: np.ndarray, how: str = "none", dims: int = 32, whiten: bool = False) -> dict[str, np.ndarray | float]:
    """The learned state of one view's transform on the fitted set: its mean, the ``pca`` basis (D×d, divided by the
    singular values when whitening) and the transformed view's mean and mean norm."""
    b = np.asarray(block, np.float64)
    state: dict[str, np.ndarray | float] = {"how": how, "mean": b.mean(0)}
    if how == "pca":
        _, s, vt = np.linalg.svd(b - state["mean"], full_matrices=False)
        d = max(1, min(int(dims), int(np.sum(s > s[0] * 1e-7)) if len(s) and s[0] > 0 else 1))
        state["basis"] = vt[:d].T / (np.maximum(s[:d], 1e-12) if whiten else 1.0)
    t = _transform(b, state)
    state["post_mean"] = t.mean(0)
    state["scale"] = max(float(np.linalg.norm(t - state["post_mean"], axis=1).mean()), 1e-12)
    return state


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _transform(b: np.ndarray, state: dict) -> np.ndarray:
    c = np.asarray(b, np.float64) - state["mean"]
    if state["how"] == "l2":
        return _unit_rows(c)
    if state["how"] in ("ssqrt", "ssqrt-l2"):
        root = np.sign(c) * np.sqrt(np.abs(c))
        return _unit_rows(root) if state["how"] == "ssqrt-l2" else root
    if state["how"] == "pca":
        return c @ state["basis"]
    return c


def apply_view_transform(block: np.ndarray, state: dict) -> np.ndarray:
    """One view through its learned transform, centred and scaled to unit mean norm over the fitted set."""
    return (_transform(block, state) - state["post_mean"]) / state["scale"]


def _log_scores(maps: AnomalyMaps) -> np.ndarray:
    return np.log(np.maximum(np.asarray(maps.scores, np.float64), 1e-12))


def _has_region(regions: Regions, n: int) -> list[bool]:
    """Per image, whether the binarizer gave it any region (its mask is not empty)."""
    masks = np.asarray(regions.masks)
    if len(masks) != n:
        raise ValueError(f"{len(masks)} masks for {n} images")
    return [bool(v) for v in masks.reshape(n, -1).any(1)]


class MultiViewDescriptor(Representation):
    """Deep-stage mean/std statistics of the whole image (context) and of a full-resolution crop around its anomaly.

    ``average`` (optional view): the mean-pooled default backbone features at ``average_size`` (Sohn et al.'s
    Average, the floor), so that a view-selecting clusterer can fall back on it.
    ``context``: the image resized to ``context_size``, backbone stages ``layers`` (Lite0 "3", "4": strides 16 and
    32), each channel's spatial mean and standard deviation. ``crop``: the square around the anomaly map's peak
    region (``box_level``, ``box_margin``, ``box_min_side``; see :func:`anomaly_boxes`) cut from the image at its
    own resolution, resized to ``crop_size``, pooled the same way. Each view is centred and scaled to unit mean norm
    over the fitted set (learned state; before that scaling each view may pass a ``view_transform``,
    :data:`VIEW_TRANSFORMS`, e.g. PCA to ``view_dims`` components), multiplied by its ``view_weights`` entry and concatenated; ``crop_gate``
    weights the crop view per image (:data:`CROP_GATES`), so images that look normal are described by their other
    views only (a crop of a good image's highest point describes where it lands, not a defect); the image scores
    of the maps travel in ``info["image_scores"]``, and whether the binarizer gave each image a region in
    ``info["has_region"]``, for clusterers that set the normal images aside first.
    ``extra_backbones``: further backbones (names shipped offline, e.g. ``tf_efficientnet_lite1``) whose views sit
    beside ``backbone``'s: each view is then the concatenation of its parts, one per backbone, each standardised on
    its own and scaled by 1/sqrt(number of backbones) so the view keeps its weight. An option, not the default's:
    with Lite1 beside Lite0 the suite moves by less than its seed spread (benchmarks/README.md, "2026-12-07, later").
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        layers: tuple[str, ...] = ("3", "4"),
        views: tuple[str, ...] = ("context", "crop"),
        view_weights: tuple[float, ...] = (1.0, 1.0),
        stats: tuple[str, ...] = ("mean", "std"),
        context_size: int = 384,
        average_size: int = 512,
        crop_size: int = 224,
        box_level: float = 0.5,
        box_margin: float = 0.25,
        box_min_side: float = 0.25,
        crop_gate: str = "none",
        anomaly_tau: float = 0.002,
        view_transform: str = "none",
        view_dims: int = 32,
        whiten: bool = False,
        batch_size: int = 16,
        extra_backbones: tuple[str, ...] = (),
    ):
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.views = views
        self.view_weights = view_weights
        self.stats = stats
        self.context_size = context_size
        self.average_size = average_size
        self.crop_size = crop_size
        self.box_level = box_level
        self.box_margin = box_margin
        self.box_min_side = box_min_side
        self.crop_gate = crop_gate
        self.anomaly_tau = anomaly_tau
        self.view_transform = view_transform
        self.view_dims = view_dims
        self.whiten = whiten
        self.batch_size = batch_size
        self.extra_backbones = extra_backbones

    def _validate(self) -> None:
        views, weights = tuple(self.views), tuple(self.view_weights)
        if not views or any(v not in VIEWS for v in views) or len(set(views)) != len(views):
            raise ValueError(f"views={list(views)}: give distinct names from {', '.join(VIEWS)}")
        if len(weights) != len(views) or any(float(w) < 0 for w in weights) or not any(float(w) > 0 for w in weights):
            raise ValueError(f"view_weights={list(weights)}: one non-negative weight per view (not all zero)")
        if not 0.0 < self.box_level < 1.0 or self.box_margin < 0 or not 0.0 < self.box_min_side <= 1.0:
            raise ValueError("box_level must lie in (0, 1), box_margin >= 0, box_min_side in (0, 1]")
        if self.crop_gate not in CROP_GATES:
            raise ValueError(f"crop_gate={self.crop_gate!r}: choose one of {', '.join(CROP_GATES)}")
        if not float(self.anomaly_tau) > 0:
            raise ValueError(f"anomaly_tau={self.anomaly_tau}: must be > 0")
        if self.view_transform not in VIEW_TRANSFORMS:
            raise ValueError(f"view_transform={self.view_transform!r}: choose one of {', '.join(VIEW_TRANSFORMS)}")
        if isinstance(self.view_dims, bool) or int(self.view_dims) != self.view_dims or int(self.view_dims) < 1:
            raise ValueError(f"view_dims={self.view_dims}: a positive integer")
        if min(self.context_size, self.crop_size, self.average_size) < 32:
            raise ValueError("context_size, crop_size and average_size must be at least 32 pixels")
        extra = self.extra_backbones
        if not isinstance(extra, (list, tuple)) or any(not isinstance(b, str) or not b for b in extra) or len(set(self._backbones())) != 1 + len(extra):
            raise ValueError(f"extra_backbones={extra!r}: a list of distinct backbone names other than backbone={self.backbone!r}")

    def _backbones(self) -> list[str]:
        """The backbones every view is described by: ``backbone`` first, then ``extra_backbones``."""
        return [self.backbone, *self.extra_backbones]

    def _spec(self, size: int, backbone: str) -> FeatureSpec:
        return FeatureSpec(backbone, tuple(str(l) for l in self.layers), int(size), self._weights(backbone))

    def _weights(self, backbone: str) -> str | None:
        """``backbone_weights`` belongs to ``backbone``; the extra backbones resolve their own (offline) weights."""
        return self.backbone_weights if backbone == self.backbone else None

    def _view_block(self, view: str, backbone: str, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> np.ndarray:
        """One view of every image, described by one backbone (N×D)."""
        if view == "anomaly":
            eq2 = WeightedDescriptor(backbone, self._weights(backbone), input_size=int(self.average_size), tau=float(self.anomaly_tau))
            return eq2.fit_transform(images, maps, regions).vectors
        if view == "average":
            return view_vectors(images, "average", FeatureSpec(backbone, (), int(self.average_size), self._weights(backbone)), ())
        if view == "context":
            return view_vectors(images, "context", self._spec(self.context_size, backbone), self.stats, batch_size=self.batch_size)
        boxes = anomaly_boxes(np.asarray(maps.scored_maps), np.asarray(maps.image_sizes), self.box_level, self.box_margin, self.box_min_side)
        return view_vectors(images, "crop", self._spec(self.crop_size, backbone), self.stats, boxes, self.batch_size)

    def _blocks(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> list[np.ndarray]:
        """The views' blocks, view by view and within a view backbone by backbone."""
        if len(maps) != len(images):
            raise ValueError(f"{len(maps)} anomaly maps for {len(images)} images")
        return [self._view_block(v, b, images, maps, regions) for v in self.views for b in self._backbones()]

    def _block_views(self) -> list[tuple[str, float]]:
        """(view name, weight) of each block of :meth:`_blocks`: a view's weight shared by its backbones' parts."""
        n = len(self._backbones())
        return [(v, float(w) / np.sqrt(n)) for v, w in zip(self.views, self.view_weights) for _ in range(n)]

    def _learn(self, blocks: list[np.ndarray], maps: AnomalyMaps) -> None:
        self.view_states_ = [fit_view_transform(b, self.view_transform, int(self.view_dims), bool(self.whiten)) for b in blocks]
        self.score_threshold_ = otsu_split(_log_scores(maps))[0]

    def crop_weights(self, maps: AnomalyMaps, regions: Regions) -> np.ndarray:
        """Per image, the weight (0 or 1) of its crop view under ``crop_gate`` (the score split learned in fit)."""
        n = len(maps)
        if self.crop_gate == "score":
            return (_log_scores(maps) > self.score_threshold_).astype(np.float32)
        if self.crop_gate == "mask":
            return np.asarray(_has_region(regions, n), np.float32)
        return np.ones(n, np.float32)

    def _embed(self, blocks: list[np.ndarray], maps: AnomalyMaps, regions: Regions) -> Embeddings:
        if not hasattr(self, "view_states_"):
            raise RuntimeError("MultiViewDescriptor is not fitted: call fit or fit_transform first")
        gate = self.crop_weights(maps, regions)
        parts = [apply_view_transform(b, st) * w * (gate[:, None] if v == "crop" else 1.0)
                 for b, st, (v, w) in zip(blocks, self.view_states_, self._block_views())]
        n = len(self._backbones())
        dims = [sum(int(p.shape[1]) for p in parts[i:i + n]) for i in range(0, len(parts), n)]
        info = {"backbone": self.backbone, "extra_backbones": list(self.extra_backbones), "views": list(self.views), "view_dims": dims, "image_scores": [float(v) for v in np.asarray(maps.scores)],
                "has_region": _has_region(regions, len(maps)), "crop_share": float(gate.mean())}
        return Embeddings.per_image(np.concatenate(parts, axis=1).astype(np.float32), info)

    def fit(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> "MultiViewDescriptor":
        self._validate()
        self._learn(self._blocks(images, maps, regions), maps)
        return self

    def fit_transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        self._validate()
        blocks = self._blocks(images, maps, regions)
        self._learn(blocks, maps)
        return self._embed(blocks, maps, regions)

    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        return self._embed(self._blocks(images, maps, regions), maps, regions)
