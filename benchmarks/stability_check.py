"""Does the clusters' stability, which a user can compute without labels, tell how far the clustering can be trusted?

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2,3,4,5 --save_blocks BLOCKS
    python benchmarks/stability_check.py --blocks BLOCKS [--suite benchmarks/suite-objects.yaml --data_root OBJ] [--out stability.json]

On the views the first command saves (each seed's own maps, regions, crops, image scores), the default classifier's
clusterer is fitted at the true K and measured by :func:`anomaly_clustering.cluster_stability` (the code every
``anomaly-cluster fit`` runs: 10 refits on random 80 % subsets), beside what the labels say:

- per set and seed: g = (NMI − floor)/(1 − floor) against the true types, and the stability score (the mean NMI
  between the run's labels and the refits'); over all runs, Spearman's rank correlation of the two;
- per cluster: its stability (mean best Jaccard with the refits) against its purity (the share of its largest true
  type), pooled over every run, in Hennig's bands (< 0.6, 0.6–0.75, 0.75–0.85, ≥ 0.85);
- ``pick by stability``: whether the score can choose between the default and Ward on one view alone (eq. 2,
  mean-pooled, context, crop) per set and seed: the g of the candidate with the highest stability score.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_fit  # noqa: E402
from view_harness import saved_blocks, saved_view_sets, saved_views_parser, seed_of  # noqa: E402

BANDS = ((0.0, 0.6), (0.6, 0.75), (0.75, 0.85), (0.85, 1.01))
VIEWS = ("eq2", "avg512", "ctx384", "crop224")


def ward_fit(x: np.ndarray, k: int):
    """(the fitted clusterer, its embeddings, its Clustering) of the ``ward`` plugin on per-image vectors ``x``."""
    from anomaly_clustering import registry
    from anomaly_clustering.records import Embeddings

    emb = Embeddings.per_image(np.asarray(x, np.float32))
    clu = registry.create("clusterer", "ward", n_clusters=k)
    return clu, emb, clu.fit_predict(emb)


def candidates(saved) -> dict[str, tuple]:
    """The default's clusterer on the saved views and Ward on each view alone: name → (clusterer, embeddings, clustering)."""
    blocks, k = saved_blocks(saved), int(saved["k"])
    out = {"default": default_fit(blocks, saved)}
    for v in VIEWS:
        out[f"ward {v}"] = ward_fit(blocks[v], k)
    return out


def run_row(path: Path, n_resamples: int) -> tuple[dict, list[tuple[float, float]]]:
    """One saved set × seed: each candidate's NMI, g and stability; the default's clusters' (stability, purity)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering import cluster_stability
    from anomaly_clustering.benchmarking import gap_closed

    saved = np.load(path)
    true, floor = np.asarray(saved["true"]), float(saved["floor"])
    row: dict = {"seed": seed_of(path), "floor": floor}
    clusters = []
    for name, (clu, emb, clustering) in candidates(saved).items():
        stab = cluster_stability(clu, emb, clustering, n_resamples, seed=0)
        score = float(nmi(true, clustering.labels))
        row[name] = {"nmi": score, "g": gap_closed(score, floor), "stability": stab.score}
        if name == "default":
            labels = np.asarray(clustering.labels)
            for c, jac in enumerate(stab.cluster_scores):
                if np.isfinite(jac):
                    members = true[labels == c]
                    clusters.append((float(jac), float(np.bincount(members).max() / len(members))))
    best = max((n for n in row if isinstance(row[n], dict)), key=lambda n: row[n]["stability"])
    row["pick by stability"] = {"picked": best, "g": row[best]["g"]}
    return row, clusters


def main() -> None:
    from scipy.stats import spearmanr

    ap = saved_views_parser()
    ap.add_argument("--n_resamples", type=int, default=10)
    args = ap.parse_args()
    from anomaly_clustering import runtime

    results, pooled_runs, pooled_clusters = {}, [], []
    for s, _images, files in saved_view_sets(args):
        rows = []
        for f in files:
            with runtime.settings(quiet=True):
                row, clusters = run_row(f, args.n_resamples)
            rows.append({**row, "clusters": clusters})
            pooled_runs.append((row["default"]["g"], row["default"]["stability"]))
            pooled_clusters += clusters
            print(f"{f.stem}: default g {row['default']['g']:+.3f} stability {row['default']['stability']:.3f}; "
                  f"picked {row['pick by stability']['picked']} g {row['pick by stability']['g']:+.3f}", flush=True)
        g = [r["default"]["g"] for r in rows]
        st = [r["default"]["stability"] for r in rows]
        pick = [r["pick by stability"]["g"] for r in rows]
        print(f"  {s.name:<13} default g {np.mean(g):+.3f} (worst {min(g):+.3f})  stability {np.mean(st):.3f} ± {np.std(st):.3f}  "
              f"pick by stability g {np.mean(pick):+.3f} (worst {min(pick):+.3f})", flush=True)
        results[s.name] = rows
    if len(pooled_runs) > 2:
        rho = spearmanr(*zip(*pooled_runs))
        print(f"runs: {len(pooled_runs)}, Spearman (g, stability) {rho.statistic:.3f} (p {rho.pvalue:.1e})")
    if pooled_clusters:
        jac, purity = (np.array(v) for v in zip(*pooled_clusters))
        for lo, hi in BANDS:
            m = (jac >= lo) & (jac < hi)
            if m.any():
                print(f"clusters with stability in [{lo:.2f}, {min(hi, 1):.2f}{')' if hi < 1 else ']'}: {int(m.sum()):>3}, mean purity {purity[m].mean():.3f}")
        if len(jac) > 2:
            rho = spearmanr(jac, purity)
            print(f"clusters: {len(jac)}, Spearman (stability, purity) {rho.statistic:.3f} (p {rho.pvalue:.1e})")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
