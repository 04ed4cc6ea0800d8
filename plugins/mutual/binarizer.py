"""Hysteresis binarizer with set-level thresholds: an image gets a region only where its map rises above what a
*typical image of the set* reaches (a robust outlier rule on the images' top values), and that region is grown down
down to that typical top value, so defect-free images keep an empty mask and a region covers its whole defect."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anomaly_clustering.interfaces import Binarizer
from anomaly_clustering.records import AnomalyMaps, ImageSet, Regions
from anomaly_clustering.regions import EIGHT_CONNECTED, masks_to_regions, otsu_threshold


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


def hysteresis(maps: np.ndarray, low: float, high: float) -> np.ndarray:
    """Masks of the 8-connected components of ``maps > low`` that hold at least one pixel ``> high``."""
    out = np.zeros(maps.shape, bool)
    for i in np.flatnonzero(np.asarray(maps).reshape(len(maps), -1).max(1) > high):
        labels, n = ndimage.label(maps[i] > low, structure=EIGHT_CONNECTED)
        seeds = np.unique(labels[(maps[i] > high) & (labels > 0)])
        out[i] = np.isin(labels, seeds) & (labels > 0)
    return out


class HysteresisThreshold(Binarizer):
    """Set-level hysteresis: seeds above a split of the images' top values (Otsu, or median + ``k``·MAD), grown to their median.

    One value per image, the mean of its map's top ``top_fraction``. ``gate="otsu"`` (default) splits those values
    into two groups (Otsu) and seeds regions only above the split, which holds whatever the share of defective
    images (a bottle set with 76 % defective images as well as MTD with 29 %); ``gate="mad"`` uses the outlier
    rule median + ``k``·1.4826·MAD instead (only right when defect-free images are the majority). Each seed grows
    over the connected pixels above the median top value (what a typical image reaches), so a region covers the
    defect, not just its peak; components under ``min_area_fraction`` of the map are dropped. An image whose map
    never reaches the upper group keeps an EMPTY mask.
    """

    def __init__(self, gate: str = "otsu", k: float = 2.0, top_fraction: float = 0.01, min_area_fraction: float = 0.001):
        self.gate = gate
        self.k = k
        self.top_fraction = top_fraction
        self.min_area_fraction = min_area_fraction

    def fit(self, maps: AnomalyMaps, images: ImageSet | None = None) -> "HysteresisThreshold":
        if self.gate not in ("otsu", "mad"):
            raise ValueError(f"HysteresisThreshold: gate must be 'otsu' or 'mad', got {self.gate!r}")
        if not float(self.k) >= 0:
            raise ValueError(f"HysteresisThreshold: k must be >= 0, got {self.k}")
        if not 0 <= float(self.top_fraction) <= 1 or not 0 <= float(self.min_area_fraction) < 1:
            raise ValueError("HysteresisThreshold: 0 <= top_fraction <= 1 and 0 <= min_area_fraction < 1 are required")
        tops = top_values(np.asarray(maps.maps, np.float32), float(self.top_fraction))
        self.high_, self.median_top_, self.spread_top_ = outlier_threshold(tops, float(self.k))
        if self.gate == "otsu" and len(tops) > 1 and np.ptp(tops) > 0:
            self.high_ = otsu_threshold(tops.astype(np.float64))
        self.low_ = min(self.median_top_, self.high_)
        return self

    def transform(self, maps: AnomalyMaps, images: ImageSet | None = None) -> Regions:
        if not hasattr(self, "high_"):
            raise RuntimeError("HysteresisThreshold.transform before fit: call fit (or fit_transform) first")
        h, w = maps.map_size
        arr = np.asarray(maps.maps, np.float32)
        min_area = max(1, int(round(float(self.min_area_fraction) * h * w)))
        masks, regions = masks_to_regions(hysteresis(arr, self.low_, self.high_), arr, min_area)
        info = {"method": "hysteresis", "gate": self.gate, "high": self.high_, "low": self.low_, "k": float(self.k), "median_top": self.median_top_, "spread_top": self.spread_top_}
        return Regions(masks, np.full(len(maps), self.low_, np.float32), regions, info)
