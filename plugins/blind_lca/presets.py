"""Classifier presets of the blind-lca family (``--classifier NAME``)."""

from anomaly_clustering.interfaces import ClassifierPreset

WEIGHTED = ClassifierPreset(
    representation="weighted-descriptor",
    clusterer="ward",
    binarizer="otsu",
    description="Blind-LCA without contrastive learning: eq. 2 anomaly-weighted descriptors + Ward",
)

BLIND_LCA = ClassifierPreset(
    representation="contrastive-head",
    clusterer="ward",
    binarizer="quantile-heuristic",
    description="Blind-LCA: contrastive 1×1 head on pixels of the quantile-heuristic masks, eq. 2 descriptors + Ward",
)

ANOMALY_CONTEXT = ClassifierPreset(
    representation={"name": "weighted-descriptor", "context_weight": 1.0},
    clusterer="ward",
    binarizer="otsu",
    description="Default: eq. 2 anomaly descriptor + mean-pooled context block + Ward (suite, 3 seeds: with fca-vae maps above the Average floor on all 4 sets, gap closed 0.07-0.29; with mutual maps below it on NEU-DET and DeepPCB)",
)
