"""Set-level thresholds: a fixed value, or Otsu's threshold over all maps of the set."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from anomaly_clustering.interfaces import Binarizer
from anomaly_clustering.records import AnomalyMaps, ImageSet, Regions
from anomaly_clustering.regions import otsu_threshold, masks_to_regions
from anomaly_clustering.validation import Interval, check_is_fitted, validate_params


class FixedThreshold(Binarizer):
    """One fixed threshold on the anomaly values (``relative``: a fraction of the set's value range)."""

    uses_global_rng: ClassVar[bool] = False  # deterministic (Otsu's subsample has a fixed seed)

    parameter_constraints: ClassVar[dict[str, list]] = {
        "threshold": [Interval(None, None)], "relative": [bool], "min_area": [Interval(1, None, "left", integer=True)],
    }

    def __init__(self, threshold: float = 0.5, relative: bool = True, min_area: int = 4):
        self.threshold = threshold
        self.relative = relative
        self.min_area = min_area

    def fit(self, maps: AnomalyMaps, images: ImageSet) -> "FixedThreshold":
        validate_params(self)
        if self.relative:
            lo, hi = float(np.min(maps.maps)), float(np.max(maps.maps))
            self.threshold_ = lo + self.threshold * (hi - lo)
        else:
            self.threshold_ = float(self.threshold)
        return self

    def transform(self, maps: AnomalyMaps, images: ImageSet) -> Regions:
        check_is_fitted(self, "threshold_")
        masks = np.asarray(maps.maps) > self.threshold_
        masks, regions = masks_to_regions(masks, maps.maps, self.min_area)
        return Regions(masks, np.full(len(maps), self.threshold_, np.float32), regions, {"method": "fixed"})


class OtsuThreshold(Binarizer):
    """Otsu's threshold on the histogram of all anomaly values of the set (one threshold for the set)."""

    uses_global_rng: ClassVar[bool] = False  # deterministic (Otsu's subsample has a fixed seed)

    parameter_constraints: ClassVar[dict[str, list]] = {
        "bins": [Interval(2, None, "left", integer=True)], "min_area": [Interval(1, None, "left", integer=True)],
    }

    def __init__(self, bins: int = 256, min_area: int = 4):
        self.bins = bins
        self.min_area = min_area

    def fit(self, maps: AnomalyMaps, images: ImageSet) -> "OtsuThreshold":
        validate_params(self)
        values = np.asarray(maps.maps, np.float64).ravel()
        if values.size > 5_000_000:
            values = values[np.random.default_rng(0).choice(values.size, 5_000_000, replace=False)]
        self.threshold_ = otsu_threshold(values, self.bins)
        return self

    def transform(self, maps: AnomalyMaps, images: ImageSet) -> Regions:
        check_is_fitted(self, "threshold_")
        masks = np.asarray(maps.maps) > self.threshold_
        masks, regions = masks_to_regions(masks, maps.maps, self.min_area)
        return Regions(masks, np.full(len(maps), self.threshold_, np.float32), regions, {"method": "otsu"})
