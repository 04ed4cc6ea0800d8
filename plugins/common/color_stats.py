"""A deliberately simple localizer that needs no network: local colour statistics against the image's own."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering import runtime
from anomaly_clustering.backbones import load_batch
from anomaly_clustering.data import image_size
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet


class ColorStatsLocalizer(Localizer):
    """Baseline, not a learned method: distance of local colour mean/std to the image's median (no backbone).

    Each pixel's anomaly is the distance of the mean and standard deviation of colour in a ``window``-pixel square
    around it to the image's median statistics, divided by their median absolute deviation. It finds blobs that
    differ in colour or contrast from a stationary background and nothing subtler.
    """

    uses_global_rng: ClassVar[bool] = False  # deterministic

    def __init__(self, input_size: int = 128, window: int = 9, batch_size: int = 16):
        self.input_size = input_size
        self.window = window
        self.batch_size = batch_size

    def predict(self, images: ImageSet) -> AnomalyMaps:
        maps = np.empty((len(images), self.input_size, self.input_size), np.float32)
        pad = self.window // 2
        for s in runtime.progress(range(0, len(images), self.batch_size), desc="color-stats", unit="batch"):
            idx = list(range(s, min(len(images), s + self.batch_size)))
            x = load_batch(images, idx, self.input_size)
            mean = F.avg_pool2d(F.pad(x, [pad] * 4, mode="reflect"), self.window, stride=1)
            sq = F.avg_pool2d(F.pad(x * x, [pad] * 4, mode="reflect"), self.window, stride=1)
            std = (sq - mean * mean).clamp_min(0).sqrt()
            stats = torch.cat([mean, std], 1).flatten(2)  # B×6×P
            med = stats.median(dim=2, keepdim=True).values
            mad = (stats - med).abs().median(dim=2, keepdim=True).values + 1e-3
            z = ((stats - med) / mad).pow(2).sum(1).sqrt()
            maps[idx] = z.view(len(idx), self.input_size, self.input_size).numpy()
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        return AnomalyMaps(maps, maps.reshape(len(images), -1).max(1), sizes, {"method": "color-stats baseline"})
