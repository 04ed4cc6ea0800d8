"""A gradient-magnitude localizer: texture edges that are unusually strong or weak for their image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering import runtime
from anomaly_clustering.backbones import load_batch
from anomaly_clustering.data import image_size
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet


class GradientLocalizer(Localizer):
    """Deviation of the local gradient magnitude from the image's median (ACME example plugin).

    Args:
        input_size: side of the square working resolution (the maps' size), in pixels.
        smoothing: side of the box filter applied to the gradient magnitude, in pixels.
    """

    def __init__(self, input_size: int = 128, smoothing: int = 5):
        self.input_size = input_size
        self.smoothing = smoothing

    def predict(self, images: ImageSet) -> AnomalyMaps:
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        kernels = torch.stack([sobel, sobel.T])[:, None]  # 2×1×3×3
        maps = np.empty((len(images), self.input_size, self.input_size), np.float32)
        for start in runtime.progress(range(0, len(images), 16), desc="acme-gradient", unit="batch"):
            idx = list(range(start, min(len(images), start + 16)))
            grey = load_batch(images, idx, self.input_size).mean(1, keepdim=True)
            grad = F.conv2d(F.pad(grey, [1] * 4, mode="reflect"), kernels).norm(dim=1, keepdim=True)
            pad = self.smoothing // 2
            grad = F.avg_pool2d(F.pad(grad, [pad] * 4, mode="reflect"), self.smoothing, stride=1)
            median = grad.flatten(1).median(1).values[:, None, None, None]
            maps[idx] = (grad - median).abs()[:, 0].numpy()
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        return AnomalyMaps(maps, maps.reshape(len(images), -1).max(1), sizes, {"method": "acme-gradient"})
