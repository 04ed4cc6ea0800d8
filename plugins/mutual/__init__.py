"""Mutual localizer: blind anomaly maps from comparing each patch with the patches of *other* images of the set.

Usage (Python)::

    from anomaly_clustering.data import load_image_set
    from anomaly_clustering.plugins.mutual import MutualLocalizer, HysteresisThreshold

    images = load_image_set("my_images/")
    maps = MutualLocalizer(input_size=128, reference_images=64, seed=0).fit_predict(images)
    regions = HysteresisThreshold().fit_transform(maps, images)   # most defect-free images get an empty mask

Usage (CLI): ``anomaly-cluster fit --data my_images/ --localizer mutual --binarizer hysteresis``.
"""

from .binarizer import HysteresisThreshold
from .localizer import MutualLocalizer

__all__ = ["MutualLocalizer", "HysteresisThreshold"]
