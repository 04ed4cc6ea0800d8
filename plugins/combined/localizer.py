"""The combined localizer: several localizers' maps of the same images, each on its set's own scale, merged into one
map (issue #19: FCA's within-image evidence and mutual scoring's across-set evidence together)."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from anomaly_clustering import registry
from anomaly_clustering.backbones import DEFAULT_BACKBONE
from anomaly_clustering.features_ops import topk_mean
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet
from anomaly_clustering.validation import check_is_fitted

from .torch_model import RULES, merge, resize_maps, robust_scale

#: Options of the members that the combined localizer's own settings fill unless ``member_options`` gives them.
_SHARED = ("backbone", "backbone_weights", "input_size", "seed")
_DEFAULT_MEMBER_OPTIONS: dict[str, dict[str, Any]] = {"mutual": {"input_size": 128}}
#: ``fca-nearest``'s across-set member: FCA's own features (same backbone, layers and 512 px: one feature cache),
#: pooled 2×2, each patch to unit length, scored by its distance to the nearest patch of 64 other images of the set.
_NEAREST_MEMBER_OPTIONS: dict[str, dict[str, Any]] = {
    "mutual": {"degrees": (1,), "pool": 2, "normalize": "l2", "quantile": 1e-6, "sigma": 0.0, "map_size": 64, "search": "ivf"}
}


class CombinedLocalizer(Localizer):
    """Merge the maps of several localizers (default: ``fca-vae`` and ``mutual``) into one.

    Each member is fitted on the set and scores it; each member's maps are resized to the first member's map size
    and standardised by their median / MAD over the whole set (learned at fit, ``scales_``), then merged by
    ``rule`` (see :func:`merge`; default ``mean``). FCA alone lights up an object's outline (rare *inside* the
    image); mutual scoring alone matches a defect with the same defect in other images (rare *across* the set): in
    the mean each covers the other's blind spot. ``mean`` had the best worst case over the four suite sets
    (benchmarks/README.md, *fca-mutual*); ``geometric`` keeps a pixel only where every member says so. The image
    score is the mean of the merged map's top ``top_fraction``.

    ``backbone``, ``backbone_weights``, ``input_size`` and ``seed`` reach every member that takes them, unless
    ``member_options`` (``{member: {option: value}}``) says otherwise; by default ``mutual`` runs at 128 px.
    """

    uses_global_rng: ClassVar[bool] = False  # every member draws from its own seed
    method_name: ClassVar[str] = "fca-mutual"
    #: Member options used when ``member_options`` is not given.
    default_member_options: ClassVar[dict[str, dict[str, Any]]] = _DEFAULT_MEMBER_OPTIONS

    def __init__(
        self,
        members: tuple[str, ...] = ("fca-vae", "mutual"),
        member_options: Mapping[str, Mapping[str, Any]] | None = None,
        rule: str = "mean",
        top_fraction: float = 0.01,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 512,
        seed: int = 0,
    ):
        self.members = members
        self.member_options = member_options
        self.rule = rule
        self.top_fraction = top_fraction
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.input_size = input_size
        self.seed = seed

    # -- construction --------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.members or len(set(self.members)) != len(self.members):
            raise ValueError(f"CombinedLocalizer: members must name one or more distinct localizers, got {self.members}")
        if any(_is_combined(m) for m in self.members):
            raise ValueError("CombinedLocalizer: a combined localizer cannot be its own member")
        if self.rule not in RULES:
            raise ValueError(f"CombinedLocalizer: rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not 0 <= float(self.top_fraction) <= 1:
            raise ValueError(f"CombinedLocalizer: top_fraction must be in [0, 1], got {self.top_fraction}")
        unknown = set(self.member_options or {}) - set(self.members)
        if unknown:
            raise ValueError(f"CombinedLocalizer: member_options names {sorted(unknown)}, which are not members {self.members}")

    def _options(self, name: str) -> dict[str, Any]:
        """The options one member is built with: the shared settings it takes, then its ``member_options``."""
        import inspect

        params = inspect.signature(registry.get_plugin("localizer", name).__init__).parameters
        given = dict((self.default_member_options if self.member_options is None else {}).get(name, {}))
        given.update((self.member_options or {}).get(name, {}))
        shared = {k: getattr(self, k) for k in _SHARED if k in params}
        return {**shared, **given}

    def composed_plugins(self) -> list[tuple[str, str]]:
        """The (kind, name) of every plugin this one builds by name: their code is part of its stage's cache key."""
        return [("localizer", name) for name in self.members]

    def _build(self) -> list[Localizer]:
        return [registry.create("localizer", name, **self._options(name)) for name in self.members]

    # -- merging --------------------------------------------------------------------------------------------------
    def _merge(self, images: ImageSet, outputs: list[AnomalyMaps], start: float) -> AnomalyMaps:
        size = outputs[0].map_size
        parts = [resize_maps(torch.from_numpy(np.ascontiguousarray(o.maps)).float(), size) for o in outputs]
        if not hasattr(self, "scales_"):
            self.scales_ = tuple(robust_scale(p, seed=self.seed) for p in parts)
        standardised = [(p - med) / mad for p, (med, mad) in zip(parts, self.scales_)]
        merged = merge(standardised, self.rule)
        scores = topk_mean(merged, float(self.top_fraction))
        info = {
            "method": self.method_name if tuple(self.members) == ("fca-vae", "mutual") else "combined",
            "members": list(self.members), "rule": self.rule, "scales": [list(s) for s in self.scales_],
            "member_info": {name: o.info for name, o in zip(self.members, outputs)},
            "timings": {"total_s": time.perf_counter() - start},
        }
        return AnomalyMaps(merged.numpy().astype(np.float32), scores.numpy().astype(np.float32), outputs[0].image_sizes, info)

    # -- Localizer API ----------------------------------------------------------------------------------------------
    def fit_predict(self, images: ImageSet, normal_images: ImageSet | None = None) -> AnomalyMaps:
        """Fit every member on the set, score the set, learn each member's scale from its maps, merge."""
        self._validate()
        start = time.perf_counter()
        self.members_ = self._build()
        outputs = [m.fit_predict(images, normal_images) for m in self.members_]
        if hasattr(self, "scales_"):
            del self.scales_
        return self._merge(images, outputs, start)

    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "CombinedLocalizer":
        """As :meth:`fit_predict` (the scales come from the set's own maps), keeping only what was learned."""
        self.fit_predict(images, normal_images)
        return self

    def predict(self, images: ImageSet) -> AnomalyMaps:
        check_is_fitted(self, "scales_")
        start = time.perf_counter()
        return self._merge(images, [m.predict(images) for m in self.members_], start)


def _is_combined(name: str) -> bool:
    """Whether the localizer registered as ``name`` merges members itself (any subclass, a third party's too); an
    unknown or broken name is left to :meth:`CombinedLocalizer._build`, which names it."""
    try:
        plugin = registry.get_plugin("localizer", name)
    except registry.PluginError:
        return False
    return isinstance(plugin, type) and issubclass(plugin, CombinedLocalizer)


class FCANearestLocalizer(CombinedLocalizer):
    """FCA+VAE's map beside each patch's distance to its nearest patch in 64 other images of the set (`fca-nearest`).

    The across-set member is ``mutual`` on FCA's own features (``_NEAREST_MEMBER_OPTIONS``: 512 px, pooled 2×2,
    unit-length patches, the nearest patch over the whole reference sample, no smoothing), so the backbone runs once
    for both. FCA scores a patch against its own image: a structure rare in one image but common in the set (a
    trace's corner, a pad) is as bright as a defect; its nearest patch in another image is close, which pulls it
    down. Both maps are standardised by their median / MAD over the set and averaged; the image score is the
    merged map's maximum (``top_fraction=0``). Figures: benchmarks/README.md, *fca-nearest*.
    """

    method_name: ClassVar[str] = "fca-nearest"
    default_member_options: ClassVar[dict[str, dict[str, Any]]] = _NEAREST_MEMBER_OPTIONS

    def __init__(
        self,
        members: tuple[str, ...] = ("fca-vae", "mutual"),
        member_options: Mapping[str, Mapping[str, Any]] | None = None,
        rule: str = "mean",
        top_fraction: float = 0.0,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | None = None,
        input_size: int = 512,
        seed: int = 0,
    ):
        super().__init__(members, member_options, rule, top_fraction, backbone, backbone_weights, input_size, seed)
