"""Would another last step than Ward's own merges undo NEU-DET's one wrong merge? (issue #21)

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/ward_merges.py --blocks BLOCKS [--suite benchmarks/suite-objects.yaml --data_root OBJ] [--out wm.json]

On NEU-DET's seeds 3–5 Ward's tree, cut at K = 6, puts inclusion with 79 of the 108 scratches and keeps the other 29
apart: the split of a spread type ranks above the merge of two compact ones. Here the default's clusterer runs with
its Ward steps replaced by an over-clustering — Ward at f·K (f = 2, 3, 4) — whose clusters are then joined to K by
average linkage, on their centroids or on the mean distance between their members (a linkage that does not favour
splitting a spread cluster). Everything else (normal group, its variation removed, reassignment) is the default's.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_labels  # noqa: E402
from view_harness import run_saved_views, saved_blocks, saved_views_parser  # noqa: E402


def over_cluster_then_join(factor: int, join: str):
    """A replacement for the clusterer's Ward step: Ward at ``factor``·K, then average linkage of those clusters to
    K — on their centroids (``join="centroids"``) or on the mean distance between their members (``"members"``)."""
    from scipy.spatial.distance import cdist
    from sklearn.cluster import AgglomerativeClustering

    def ward_step(x: np.ndarray, k: int) -> np.ndarray:
        if k <= 1 or len(x) < 2:
            return np.zeros(len(x), np.int64)
        fine = AgglomerativeClustering(n_clusters=min(len(x), factor * k), linkage="ward").fit_predict(x)
        groups = [x[fine == c] for c in range(fine.max() + 1)]
        if join == "centroids":
            top = AgglomerativeClustering(n_clusters=k, linkage="average").fit_predict(np.stack([g.mean(0) for g in groups]))
        else:
            d = np.array([[cdist(a, b).mean() if i != j else 0.0 for j, b in enumerate(groups)] for i, a in enumerate(groups)])
            top = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(d)
        return top[fine].astype(np.int64)

    return ward_step


@contextmanager
def ward_step_replaced(step):
    """The default clusterer's module-level Ward step replaced by ``step`` while inside."""
    from anomaly_clustering.plugins.multiview import clusterers

    original = clusterers._ward
    clusterers._ward = step
    try:
        yield
    finally:
        clusterers._ward = original


VARIANTS = {f"Ward x{f}, joined on {join}": (f, join) for f, join in ((2, "centroids"), (3, "centroids"), (3, "members"), (4, "members"))}


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    args = saved_views_parser().parse_args()

    def row_of(images, path, d) -> dict[str, float]:
        blocks, true = saved_blocks(d), d["true"]
        row = {"default": float(nmi(true, default_labels(blocks, d)))}
        for name, (factor, join) in VARIANTS.items():
            with ward_step_replaced(over_cluster_then_join(factor, join)):
                row[name] = float(nmi(true, default_labels(blocks, d)))
        return row

    run_saved_views(args, row_of, width=30)


if __name__ == "__main__":
    main()
