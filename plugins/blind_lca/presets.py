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
    description="eq. 2 anomaly descriptor + mean-pooled context block + Ward (the default until 2026-12-01; suite on the CPU, 3 seeds, fca-vae maps: gap closed 0.01-0.41, one seed below the Average floor on the bottle and on DeepPCB; with mutual maps below it on NEU-DET and DeepPCB)",
)
