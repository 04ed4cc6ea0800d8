"""Classifier presets of the multi-view family (``--classifier NAME``)."""

from anomaly_clustering.interfaces import ClassifierPreset

MULTIVIEW = ClassifierPreset(
    representation="multiview",
    clusterer="ward",
    binarizer="otsu",
    description="Multi-view: deep-stage mean/std statistics of the whole image + of a full-resolution crop of its anomaly, Ward",
)

MULTIVIEW_NORMAL_FIRST = ClassifierPreset(
    representation="multiview",
    clusterer="normal-first",
    binarizer="otsu",
    description="Multi-view descriptor; low-score majority set aside by Otsu on the image scores, the rest into K-1 by Ward",
)

MULTIVIEW_CONSENSUS = ClassifierPreset(
    representation="multiview",
    clusterer="consensus",
    binarizer="otsu",
    description="Multi-view descriptor; co-association consensus of seeded k-means runs on random feature subspaces",
)

MULTIVIEW_SELECT = ClassifierPreset(
    representation={"name": "multiview", "views": ("average", "context", "crop"), "view_weights": (1.0, 1.0, 1.0)},
    clusterer="view-select",
    binarizer="otsu",
    description="Multi-view with the Average floor as a view; Ward on the view subset with the best silhouette, chosen per set",
)

MULTIVIEW_ANOMALY = ClassifierPreset(
    representation={"name": "multiview", "views": ("anomaly", "average", "context"), "view_weights": (1.0, 1.0, 1.0)},
    clusterer="ward",
    binarizer="hysteresis",
    description="anomaly-context plus deep context: eq. 2 anomaly descriptor + mean-pooled features + stride-16/32 "
    "mean/std of the whole image at 384 px, Ward (the default until 2026-12-02; suite on the CPU, 3 seeds, fca-vae maps: "
    "above the Average floor on every seed of all 4 sets, gap closed 0.03-0.57, mean 0.27)",
)

MULTIVIEW_ANOMALY_CROP = ClassifierPreset(
    representation={"name": "multiview", "views": ("anomaly", "context", "crop"), "view_weights": (1.0, 1.0, 1.0), "crop_gate": "mask"},
    clusterer="ward",
    binarizer="hysteresis",
    description="eq. 2 anomaly descriptor + deep context + a full-resolution crop only for images the binarizer gives a region, Ward",
)

MULTIVIEW_ALL = ClassifierPreset(
    representation={"name": "multiview", "views": ("anomaly", "average", "context", "crop"),
                    "view_weights": (1.0, 1.0, 1.0, 1.0), "crop_gate": "mask"},
    clusterer="ward",
    binarizer="hysteresis",
    description="Every view, uniform weights: eq. 2 anomaly descriptor + mean-pooled features + deep context at "
    "384 px + a full-resolution crop for images the binarizer gives a region, Ward (the default until 2026-12-02, later; "
    "suite on the CPU, 3 seeds, fca-vae maps: above the Average floor on every seed of all 4 sets, gap closed 0.06-0.89)",
)

MULTIVIEW_ALL_NORMAL_FIRST = ClassifierPreset(
    representation={"name": "multiview", "views": ("anomaly", "average", "context", "crop"),
                    "view_weights": (1.0, 1.0, 1.0, 1.0), "crop_gate": "mask", "view_transform": "ssqrt-l2"},
    clusterer={"name": "normal-first", "normal_by": "region", "normal_variation": 0.5, "reassign_normal": True},
    binarizer="hysteresis",
    description="Default: multiview-all's views, each power- and L2-normalised (signed square root, unit length per "
    "image); when the binarizer leaves most images without a region and those "
    "images look like one population (they split less clearly than the rest), they are one cluster, the directions "
    "holding half of their own variance are removed, Ward splits the rest into K-1 types, and each image of that group "
    "joins the nearest of the K centroids (one step); otherwise Ward on all, "
    "as multiview-all (see benchmarks/README.md, 'The development suite', for its figures on every set)",
)

MULTIVIEW_ANOMALY_PCA = ClassifierPreset(
    representation={"name": "multiview", "views": ("anomaly", "average", "context"), "view_weights": (0.5, 1.0, 1.0),
                    "view_transform": "pca", "view_dims": 64},
    clusterer="ward",
    binarizer="hysteresis",
    description="eq. 2 anomaly descriptor (x0.5) + mean-pooled features + deep context at 384 px, each view cut to its "
    "first 64 principal components, Ward (mutual maps: above the floor on all 4 suite sets, g 0.02-0.56, but weighted on them: see benchmarks/README.md)",
)
