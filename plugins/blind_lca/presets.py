"""Classifier presets of the blind-lca family (``--classifier NAME``)."""

from anomaly_clustering.interfaces import ClassifierPreset

AVERAGE = ClassifierPreset(
    representation="average",
    clusterer="ward",
    binarizer="otsu",
    description="Sohn et al.'s Average: mean-pooled backbone features + Ward (the floor every method must beat)",
)
