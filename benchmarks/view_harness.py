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


def saved_views_parser(localizer: str = "fca-vae") -> argparse.ArgumentParser:
    """The options of a harness over the views ``classifier_ablation.py --save_blocks`` saved: the suite's, the
    views' folder (``--blocks``) and a JSON output (``--out``)."""
    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer=localizer)
    ap.add_argument("--blocks", required=True, help="the --save_blocks folder of classifier_ablation.py")
    ap.add_argument("--out", default=None)
    return ap


def saved_view_sets(args: argparse.Namespace, tag: str = ""):
    """Per suite set chosen by ``args`` with saved views: (suite set, its images, the views' files, one per seed)."""
    from pathlib import Path

    from anomaly_clustering.benchmarking import load_suite, select_images

    for s in load_suite(args.suite, args.data_root):
        files = sorted(Path(args.blocks).glob(f"{s.name}_{args.localizer}{tag}_seed*.npz"))
        if (args.sets and s.name not in args.sets) or not files:
            continue
        yield s, select_images(s.data, s.subset, s.subset_seed, s.exclude_good), files


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
