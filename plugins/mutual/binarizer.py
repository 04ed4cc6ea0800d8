"""Gated binarizer with per-image regions: a set-level gate on the image scores decides WHICH images get a region
(Otsu's split of the scores, or a robust outlier rule), and inside each flagged image the region is the part of its
map that rises well above the image's own normal level, so defect-free images keep an empty mask."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from scipy import ndimage

from anomaly_clustering.interfaces import Binarizer
from anomaly_clustering.records import AnomalyMaps, ImageSet, Region, Regions
from anomaly_clustering.regions import EIGHT_CONNECTED, masks_to_regions, otsu_threshold

from . import exemplar

GATES = ("otsu", "mad")
SCORES = ("image", "top", "exemplar", "auto")
GROWS = ("peak", "median-top")


def top_values(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Per image, the mean of its map's top ``fraction`` of values (at least one value)."""
    flat = np.asarray(maps, np.float32).reshape(len(maps), -1)
    k = max(1, int(round(fraction * flat.shape[1])))
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(1)


def outlier_threshold(values: np.ndarray, k: float) -> tuple[float, float, float]:
    """(median + ``k``·spread, median, spread) with spread = 1.4826·MAD: robust to a minority of outliers."""
    med = float(np.median(values))
    spread = max(1.4826 * float(np.median(np.abs(values - med))), 1e-6 * max(abs(med), 1.0))
    return med + k * spread, med, spread


def peak_levels(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Per image, median + ``fraction`` × (peak − median) of its own map: the level a region must rise above."""
    flat = np.asarray(maps, np.float32).reshape(len(maps), -1)
    med = np.median(flat, axis=1)
    return med + fraction * (flat.max(1) - med)


class HysteresisThreshold(Binarizer):
    """Set-level gate on the image scores, then each flagged image's region above a level of its own map.

    Gate (``fit``): one value per image — the localizer's image score (``score="image"``, default) or the mean of
    the map's top ``top_fraction`` (``score="top"``), or, on two-level images, the RMS difference of the window at
    the map's peak to its nearest window in the set's other images (``score="exemplar"``, see
    :mod:`plugins.mutual.exemplar`; ``score="auto"``: that on a set of two-level images, the image score otherwise)
    — split into two groups by Otsu (``gate="otsu"``, default:
    holds whatever the share of defective images, a bottle set with 76 % as well as MTD with 29 %) or by the
    outlier rule median + ``k``·1.4826·MAD (``gate="mad"``: right only when defect-free images are the majority).
    Images at or below the split keep an EMPTY mask. Regions (``transform``): in a flagged image, the pixels above
    median + ``peak_fraction`` × (peak − median) of its own map (``grow="peak"``, default), or above the set's
    median top value (``grow="median-top"``); components under ``min_area_fraction`` of the map are dropped, except
    that a flagged image whose every component is that small keeps the one holding its peak (every image the gate
    flags has a region, so the verdict a classifier reads is the gate's).
    """

    uses_global_rng: ClassVar[bool] = False  # deterministic

    def __init__(
        self,
        gate: str = "otsu",
        k: float = 2.0,
        score: str = "image",
        top_fraction: float = 0.01,
        grow: str = "peak",
        peak_fraction: float = 0.6,
        min_area_fraction: float = 0.001,
        exemplar_window: float = 0.1875,
        exemplar_bank_images: int = 400,
    ):
        self.gate = gate
        self.k = k
        self.score = score
        self.top_fraction = top_fraction
        self.grow = grow
        self.peak_fraction = peak_fraction
        self.min_area_fraction = min_area_fraction
        self.exemplar_window = exemplar_window
        self.exemplar_bank_images = exemplar_bank_images

    def _validate(self) -> None:
        for name, value, allowed in (("gate", self.gate, GATES), ("score", self.score, SCORES), ("grow", self.grow, GROWS)):
            if value not in allowed:
                raise ValueError(f"HysteresisThreshold: {name} must be one of {allowed}, got {value!r}")
        if not float(self.k) >= 0:
            raise ValueError(f"HysteresisThreshold: k must be >= 0, got {self.k}")
        if not 0 <= float(self.top_fraction) <= 1 or not 0 <= float(self.peak_fraction) < 1 or not 0 <= float(self.min_area_fraction) < 1:
            raise ValueError("HysteresisThreshold: 0 <= top_fraction <= 1, 0 <= peak_fraction < 1 and 0 <= min_area_fraction < 1 are required")
        if not 0 < float(self.exemplar_window) < 1 or int(self.exemplar_bank_images) < 1:
            raise ValueError("HysteresisThreshold: 0 < exemplar_window < 1 and exemplar_bank_images >= 1 are required")

    def _resolve_score(self, images: ImageSet | None) -> str:
        """The score the gate reads: ``auto`` becomes ``exemplar`` on a set of two-level images, ``image`` otherwise."""
        if self.score == "auto":
            return "exemplar" if images is not None and exemplar.is_two_level(images) else "image"
        if self.score == "exemplar" and images is None:
            raise ValueError("HysteresisThreshold: score='exemplar' compares the images themselves; pass the images")
        return self.score

    def _fit_exemplars(self, images: ImageSet) -> None:
        """Keep up to ``exemplar_bank_images`` of the set (evenly spaced, deterministic) as the exemplar bank."""
        binary = exemplar.binary_images(images)
        take = np.unique(np.linspace(0, len(binary) - 1, min(len(binary), int(self.exemplar_bank_images))).round().astype(int))
        self.exemplar_bank_ = np.packbits(binary[take], axis=-1)
        self.exemplar_keys_ = exemplar.image_keys(binary[take])
        self._fitted_binary = (images.fingerprint(), binary)

    def _exemplar_scores(self, maps: AnomalyMaps, images: ImageSet) -> np.ndarray:
        fitted = getattr(self, "_fitted_binary", None)
        binary = fitted[1] if fitted and fitted[0] == images.fingerprint() else exemplar.binary_images(images)
        if getattr(self, "_bank", None) is None:
            side = exemplar.EXEMPLAR_SIDE
            bank_binary = np.unpackbits(self.exemplar_bank_, axis=-1)[..., :side].astype(bool)
            self._bank = exemplar.ExemplarBank(bank_binary, self.exemplar_keys_, int(round(float(self.exemplar_window) * side)))
        scored = maps.scored_maps
        key = (images.fingerprint(), scored.reshape(len(scored), -1).argmax(1).tobytes())  # fit, then transform: one search
        last = getattr(self, "_last_scores", None)
        if last is None or last[0] != key:
            self._last_scores = (key, exemplar.exemplar_scores(binary, exemplar.image_keys(binary), scored, self._bank))
        return self._last_scores[1]

    def __getstate__(self) -> dict:  # the search index, the fitted set's pixels and the last scores are not stored
        return {k: v for k, v in self.__dict__.items() if k not in ("_bank", "_fitted_binary", "_last_scores")}

    def gate_scores(self, maps: AnomalyMaps, images: ImageSet | None = None) -> np.ndarray:
        """The per-image values the gate splits (after ``fit``: the resolved ``score_``), for reports and benchmarks."""
        score = getattr(self, "score_", self.score)
        if score == "image":
            return np.asarray(maps.scores, np.float64)
        if score == "exemplar":
            return self._exemplar_scores(maps, images)
        return top_values(np.asarray(maps.maps, np.float32), float(self.top_fraction)).astype(np.float64)

    def fit(self, maps: AnomalyMaps, images: ImageSet | None = None) -> HysteresisThreshold:
        """The gate: the split of the set's image scores, and the median top value (``grow="median-top"``)."""
        self._validate()
        self.score_ = self._resolve_score(images)
        if self.score_ == "exemplar":
            self._fit_exemplars(images)
        scores = self.gate_scores(maps, images)
        self.gate_, self.median_score_, self.spread_score_ = outlier_threshold(scores, float(self.k))
        if self.gate == "otsu" and len(scores) > 1 and np.ptp(scores) > 0:
            self.gate_ = otsu_threshold(scores)
        self.median_top_ = float(np.median(top_values(np.asarray(maps.maps, np.float32), float(self.top_fraction))))
        return self

    def transform(self, maps: AnomalyMaps, images: ImageSet | None = None) -> Regions:
        """Masks of the images whose score passes the gate; every other image keeps an empty mask."""
        if not hasattr(self, "gate_"):
            raise RuntimeError("HysteresisThreshold.transform before fit: call fit (or fit_transform) first")
        h, w = maps.map_size
        arr = np.asarray(maps.maps, np.float32)
        if getattr(self, "score_", None) == "exemplar" and images is None:
            raise ValueError("HysteresisThreshold: this gate compares the images themselves; pass the images to transform")
        flagged = self.gate_scores(maps, images) > self.gate_
        levels = peak_levels(arr, float(self.peak_fraction)) if self.grow == "peak" else np.full(len(arr), self.median_top_, np.float32)
        thresholds = np.where(flagged, levels, np.inf).astype(np.float32)
        min_area = max(1, int(round(float(self.min_area_fraction) * h * w)))
        masks, regions = masks_to_regions(arr > thresholds[:, None, None], arr, min_area)
        lost = np.flatnonzero(flagged & ~masks.reshape(len(masks), -1).any(1))
        if len(lost):
            masks, regions = _with_peak_regions(masks, regions, arr, thresholds, lost)
        info = {"method": "hysteresis", "gate": self.gate, "score": getattr(self, "score_", self.score), "grow": self.grow, "gate_threshold": self.gate_,
                "median_score": self.median_score_, "spread_score": self.spread_score_, "flagged": int(flagged.sum()),
                "peak_regions_kept": int(len(lost))}
        return Regions(masks, thresholds, regions, info)


def _with_peak_regions(masks: np.ndarray, regions: tuple[Region, ...], maps: np.ndarray, thresholds: np.ndarray,
                       images: np.ndarray) -> tuple[np.ndarray, tuple[Region, ...]]:
    """``masks`` and ``regions`` with, for each of ``images`` (flagged, but every component under the minimum area),
    the component of its map at its level (or at its peak, when the level lies above it) that holds the peak: the
    gate's verdict stands, and a small defect keeps a small region."""
    masks = masks.copy()
    for i in images:
        m = maps[i]
        peak = np.unravel_index(int(np.argmax(m)), m.shape)
        labels, _ = ndimage.label(m >= min(float(thresholds[i]), float(m[peak])), structure=EIGHT_CONNECTED)
        masks[i] = labels == labels[peak]
    _, kept = masks_to_regions(masks[images], maps[images], 1)
    kept = tuple(dataclasses.replace(r, image_index=int(images[r.image_index])) for r in kept)
    return masks, tuple(sorted(regions + kept, key=lambda r: r.image_index))
