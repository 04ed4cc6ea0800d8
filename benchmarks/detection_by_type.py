"""Which defect types the image ranking misses, and whether a set-level outlier score finds them (issue #19).

    python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    python benchmarks/detection_by_type.py --blocks BLOCKS --sets mtd [--out det.json]

Per saved set × seed (sets with good images): the image AUROC of each defect type against the good images, for the
localizer's own image score (the map's maximum) and for the mean distance to the k nearest other images (k = 5, 20,
50) on each saved view (mean-pooled, context, eq. 2, crop) — a score that compares an image with the set instead of
a patch with its own image, the evidence an image-wide anomaly (MTD's `uneven`) would need.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_harness import saved_blocks, saved_view_sets, saved_views_parser, seed_of  # noqa: E402


def auroc_by_type(true: np.ndarray, names: list[str], scores: np.ndarray) -> dict[str, float]:
    """AUROC of every defect type against the good images, and of all defective images ("all")."""
    from sklearn.metrics import roc_auc_score

    good = true == names.index("good")
    out = {}
    for t, name in enumerate(names):
        if name != "good":
            sel = good | (true == t)
            out[name] = float(roc_auc_score(true[sel] == t, scores[sel]))
    out["all"] = float(roc_auc_score(~good, scores))
    return out


def knn_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each row to its ``k`` nearest other rows."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, 1:].mean(1)


def main() -> None:
    from anomaly_clustering.data import load_ground_truth

    args = saved_views_parser().parse_args()
    results: dict[str, list] = {}
    for s, images, files in saved_view_sets(args):
        _, names = load_ground_truth(images).label_ids()
        if "good" not in names:
            continue
        rows = []
        for f in files:
            d = np.load(f)
            true = np.asarray(d["true"])
            row = {"seed": seed_of(f), "image score (max)": auroc_by_type(true, list(names), np.asarray(d["scores"]))}
            for view, x in saved_blocks(d).items():
                for k in (5, 20, 50):
                    row[f"{k}-NN distance, {view}"] = auroc_by_type(true, list(names), knn_distance(x, k))
            rows.append(row)
        results[s.name] = rows
        print(f"{s.name}: image AUROC % per type, mean over {len(rows)} seeds")
        for rule in [r for r in rows[0] if r != "seed"]:
            cells = ", ".join(f"{t} {100 * np.mean([r[rule][t] for r in rows]):.1f}" for t in rows[0][rule])
            print(f"  {rule:<26} {cells}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
