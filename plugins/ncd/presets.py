"""Classifier presets of the AnomalyNCD family (``--classifier NAME``)."""

from anomaly_clustering.interfaces import ClassifierPreset

NCD = ClassifierPreset(
    representation="mgvit-ncd",
    clusterer="region-merge",
    binarizer="mebin",
    description="AnomalyNCD: MEBin crops + mask-guided ViT/hybrid trained by self-distillation + area-weighted region merging",
)
