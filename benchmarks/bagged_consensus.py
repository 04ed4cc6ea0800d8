"""Would the refits that measure stability also steady the labels? A bagged consensus of the default's clusterer.

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2,3,4,5 --save_blocks BLOCKS
    python benchmarks/bagged_consensus.py --blocks BLOCKS --bags 10,20 --bag_seeds 0,1,2 [--suite ... --data_root ...] [--out bag.json]

On the saved views (each seed's own maps, regions, crops, image scores), the default classifier's clusterer is
refitted at the true K on B random subsets of 80 % of the images (as :mod:`anomaly_clustering.stability` does);
the share of refits that put two images together (among the refits holding both) is their co-association, and
average linkage on 1 − co-association cuts K clusters (bagged clustering, Dudoit & Fridlyand 2003; consensus
clustering, Monti et al. 2003). Rows: the default, and the consensus for each B and each seed of the subset draw,
as g = (NMI − floor)/(1 − floor) per set and seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stability_check import candidates  # noqa: E402
from view_harness import run_saved_views, saved_views_parser  # noqa: E402


def bagged_labels(clusterer, embeddings, k: int, bags: int, seed: int, fraction: float = 0.8) -> np.ndarray:
    """K clusters of the co-association of ``bags`` refits of ``clusterer`` on random subsets, average linkage."""
    from sklearn.cluster import AgglomerativeClustering

    from anomaly_clustering.stability import subset_refits

    n = embeddings.n_images
    together = np.zeros((n, n), np.float32)
    seen = np.zeros((n, n), np.float32)
    for keep, labels in subset_refits(clusterer, embeddings, k, bags, fraction, seed):
        together[np.ix_(keep, keep)] += labels[:, None] == labels[None, :]
        seen[np.ix_(keep, keep)] += 1
    co = together / np.maximum(seen, 1)
    return AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(1.0 - co)


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering import runtime

    ap = saved_views_parser()
    ap.add_argument("--bags", default="10,20")
    ap.add_argument("--bag_seeds", default="0,1,2")
    args = ap.parse_args()
    bags = [int(b) for b in args.bags.split(",")]
    bag_seeds = [int(s) for s in args.bag_seeds.split(",")]

    def row_of(_images, _path, saved) -> dict[str, float]:
        true, k = np.asarray(saved["true"]), int(saved["k"])
        with runtime.settings(quiet=True):
            clu, emb, clustering = candidates(saved)["default"]
            row = {"default": float(nmi(true, clustering.labels))}
            for b in bags:
                for s in bag_seeds:
                    row[f"bagged B{b} draw {s}"] = float(nmi(true, bagged_labels(clu, emb, k, b, s)))
        return row

    run_saved_views(args, row_of, width=24)


if __name__ == "__main__":
    main()
