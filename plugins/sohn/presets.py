"""Classifier presets of Sohn et al.'s baselines (``--classifier NAME``)."""

from anomaly_clustering.interfaces import ClassifierPreset

AVERAGE = ClassifierPreset(
    representation="average",
    clusterer="ward",
    binarizer="otsu",
    description="Sohn et al.'s Average: mean-pooled backbone features + Ward (the floor every method must beat)",
)

MAX_HAUSDORFF = ClassifierPreset(
    representation="max-hausdorff",
    clusterer="ward",
    binarizer="otsu",
    description="Sohn et al.'s Max Hausdorff: Hausdorff distance between patch bags (MDS-embedded) + Ward; O(N²) time",
)

WEIGHTED_AVERAGE = ClassifierPreset(
    representation="weighted-average",
    clusterer="ward",
    binarizer="otsu",
    description="Sohn et al.'s Weighted Average: patches weighted by distance to the other images + Ward; O(N²) time",
)
