"""Where the default's clustering gap lies, on saved views: the verdict "has a defect" made perfect, and the
clustering step changed (Ward refined, spectral, PCA, a consensus over seeds, a looser verdict).

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2,3,4,5 --save_blocks BLOCKS
    python benchmarks/clusterer_diagnostics.py --blocks BLOCKS [--out diagnostics.json]

Every variant starts from the same saved views, regions and image scores as the default
(``multiview-all-normal-first``'s clusterer at the saved K) and changes one thing:

- ``verdict = truth``: the images with a defect are the labelled defective ones (not the binarizer's regions): the
  crop view enters for exactly those and the normal group is exactly the good images. A diagnostic, not a method:
  it says how much of a set's gap is the per-image verdict and how much the description of the types.
- ``structure check off``: the normal group is set aside whenever it holds most images.
- ``Ward + k-means``: Lloyd iterations from Ward's centroids wherever Ward clusters.
- ``spectral``: spectral clustering on a 10-NN graph wherever Ward clusters.
- ``PCA 64``: the concatenated descriptor cut to its first 64 principal components first.
- ``verdict = top 30 %``: the 30 % highest image scores count as having a defect (a looser verdict).
- ``consensus of 3 seeds``: the default's labels of this seed and the next two saved seeds (cyclically), combined
  by co-association and average linkage (three fits' worth of work).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import consensus, default_labels  # noqa: E402
from view_harness import region_info, run_saved_views, saved_blocks, saved_views_parser, seed_of  # noqa: E402


@contextlib.contextmanager
def clustering_step(step):
    """The multiview clusterers' Ward step replaced by ``step(x, k, ward) -> labels`` inside the block (``ward``: the
    original step; K ≤ 1 and single images still go to it)."""
    from anomaly_clustering.plugins.multiview import clusterers

    original = clusterers._ward
    clusterers._ward = lambda x, k: original(x, k) if k <= 1 or len(x) < 2 else step(x, k, original)
    try:
        yield
    finally:
        clusterers._ward = original


def ward_kmeans(x: np.ndarray, k: int, ward) -> np.ndarray:
    """Ward's K clusters refined by k-means (Lloyd) from their centroids."""
    from sklearn.cluster import KMeans

    from anomaly_clustering.plugins.multiview.clusterers import _centroids

    return KMeans(k, init=_centroids(x, ward(x, k), k), n_init=1).fit_predict(x).astype(np.int64)


def spectral(x: np.ndarray, k: int, _ward) -> np.ndarray:
    """Spectral clustering on a 10-NN graph."""
    from sklearn.cluster import SpectralClustering

    return SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=10, random_state=0,
                              assign_labels="cluster_qr").fit_predict(x).astype(np.int64)


def pca(x: np.ndarray, dims: int = 64) -> np.ndarray:
    """The rows of ``x`` on their first ``dims`` principal components."""
    c = np.asarray(x, np.float64) - x.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return (c @ vt[:dims].T).astype(np.float32)


def defective(images, saved) -> np.ndarray:
    """Per image, whether its true type is not ``good`` (all True where the set has no good type)."""
    from anomaly_clustering.data import load_ground_truth

    _, names = load_ground_truth(images).label_ids()
    good = list(names).index("good") if "good" in names else -1
    return np.asarray(saved["true"]) != good


def seed_consensus(path: Path, saved) -> np.ndarray:
    """Co-association of the default's labels on this seed's saved views and the next two saved seeds'."""
    files = sorted(path.parent.glob(path.name.replace(f"_seed{seed_of(path)}.npz", "_seed*.npz")), key=seed_of)
    at = [seed_of(f) for f in files].index(seed_of(path))
    chosen = [np.load(files[(at + i) % len(files)]) for i in range(min(3, len(files)))]
    return consensus([default_labels(saved_blocks(d), d) for d in chosen], int(saved["k"]))


def diagnostic_row(images, path: Path, saved) -> dict[str, float]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    blocks, (has_region, _) = saved_blocks(saved), region_info(saved)
    score = lambda labels: float(nmi(saved["true"], labels))  # noqa: E731
    scores = np.asarray(saved["scores"])
    row = {"default": score(default_labels(blocks, saved, has_region)),
           "verdict = truth": score(default_labels(blocks, saved, defective(images, saved)))}
    row["structure check off"] = score(default_labels(blocks, saved, has_region, structure_check=False))
    for name, step in (("Ward + k-means", ward_kmeans), ("spectral", spectral)):
        with clustering_step(step):
            row[name] = score(default_labels(blocks, saved, has_region))
    row["PCA 64"] = score(default_labels(blocks, saved, has_region, pca))
    row["verdict = top 30 %"] = score(default_labels(blocks, saved, scores >= np.quantile(scores, 0.7)))
    row["consensus of 3 seeds"] = score(seed_consensus(path, saved))
    return row


def main() -> None:
    args = saved_views_parser().parse_args()
    run_saved_views(args, diagnostic_row, width=22)


if __name__ == "__main__":
    main()
