"""Ground-truth masks as the binarizer output: an upper bound for every classifier (evaluation only)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from anomaly_clustering.data import load_ground_truth
from anomaly_clustering.interfaces import Binarizer
from anomaly_clustering.records import AnomalyMaps, ImageSet, Regions
from anomaly_clustering.regions import masks_to_regions


class OracleMasks(Binarizer):
    """Oracle: reads the data set's ground-truth masks (MVTec layout or a labels CSV) instead of thresholding.

    For measuring a classifier with perfect localization (AnomalyNCD, Table I); it reads labels, so it is
    never part of a blind run.
    """

    uses_global_rng: ClassVar[bool] = False  # deterministic

    def __init__(self, labels_csv: str | None = None, min_area: int = 1):
        self.labels_csv = labels_csv
        self.min_area = min_area

    def transform(self, maps: AnomalyMaps, images: ImageSet) -> Regions:
        gt = load_ground_truth(images, self.labels_csv)
        size = maps.map_size
        masks = np.stack([gt.load_mask(i, size) for i in range(len(images))])
        masks, regions = masks_to_regions(masks, maps.maps, self.min_area)
        return Regions(masks, np.full(len(images), np.nan, np.float32), regions, {"method": "oracle (ground truth)"})
