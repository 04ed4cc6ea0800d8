"""What the view-ablation scripts share: the suite options, one view's standardisation (the ``multiview`` plugin's own,
so a variant here is the representation the preset computes) and Ward at a given K."""

from __future__ import annotations

import argparse
import os

import numpy as np

#: Benchmarks never download: weights come from installed packages or local files (a missing file is an error).
os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")


def add_suite_arguments(ap: argparse.ArgumentParser, localizer: str) -> None:
    """The options every suite harness takes: the suite file, its data root, which sets, the localizer, the seeds."""
    ap.add_argument("--suite", default="benchmarks/suite.yaml")
    ap.add_argument("--data_root", default=None)
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument("--localizer", default=localizer)
    ap.add_argument("--seeds", default="0,1,2")


def standardise(block: np.ndarray) -> np.ndarray:
    """One view centred and scaled to unit mean norm over the set (``multiview``'s ``view_transform="none"``)."""
    from anomaly_clustering.plugins.multiview.representation import (
        apply_view_transform,
        fit_view_transform,
    )

    return apply_view_transform(block, fit_view_transform(block))


def ward(x: np.ndarray, k: int) -> np.ndarray:
    """Ward's K clusters of the rows of ``x`` (both papers' clusterer)."""
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
