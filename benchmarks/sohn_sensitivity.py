"""Sohn et al.'s Max Hausdorff and Weighted Average on MTD: which of our choices moves them toward the paper's figures.

Our baselines pool the backbone map to a non-overlapping ``grid``×``grid`` bag at 512 px, embed Max Hausdorff
distances by classical MDS before Ward, and set Weighted Average's softmax temperature to τ × the median score.
Sohn et al.'s own bags are (most likely, per a third-party reimplementation; the paper's method section is not held
here) 3×3-aggregated stride-1 patches of a 224 px crop, and their Hausdorff distances may be clustered directly.
This script computes the pairwise patch distances once per bag setting and scores every variant on one stratified
subset, beside the Average floor of the same setting:

    ANOMALY_CLUSTERING_CACHE=CACHE nice python benchmarks/sohn_sensitivity.py --data ../shared/data/mtd/test \
        --subset 400 --bags 512:16:pool 256:16:pool 224:28:local3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.cluster import AgglomerativeClustering

from anomaly_clustering import runtime
from anomaly_clustering.backbones import DEFAULT_BACKBONE, FeatureSpec, extract_features
from anomaly_clustering.data import load_image_set
from anomaly_clustering.metrics import clustering_scores
from anomaly_clustering.plugins.sohn.representations import classical_mds, nearest_patch_reductions
from anomaly_clustering.plugins.common.clusterers import WardClusterer
from anomaly_clustering.records import Embeddings

from data_paths import default_set  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

PAPER_MTD = {"average": (0.065, 0.024, 0.289), "max-hausdorff": (0.193, 0.112, 0.381), "weighted-average": (0.179, 0.120, 0.346)}


def labels_of(images) -> np.ndarray:
    kinds = [n.split("/")[0] for n in images.names]
    names = sorted(set(kinds))
    return np.array([names.index(k) for k in kinds])


def stratified(images, n: int, seed: int = 0):
    """n images with every class in proportion (at least one each)."""
    if not n or n >= len(images):
        return images
    labels = labels_of(images)
    rng = np.random.default_rng(seed)
    pick = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        pick += rng.choice(members, max(1, round(n * len(members) / len(labels))), replace=False).tolist()
    return images.subset(sorted(pick))


def bags_of(feats, grid: int, aggregation: str, batch: int = 32) -> torch.Tensor:
    """N×P×C patch bags: ``pool`` = adaptive average pooling to grid×grid (ours); ``local3`` = 3×3 stride-1 average
    of the map (each patch sees its neighbours, PatchCore-style), then every cell of a grid×grid resampling."""
    n = len(feats)
    out = []
    for s in range(0, n, batch):
        f = feats.batch(np.arange(s, min(n, s + batch)))
        if aggregation == "local3":
            f = F.avg_pool2d(f, 3, 1, 1, count_include_pad=False)
        f = F.adaptive_avg_pool2d(f, (grid, grid))
        out.append(f.flatten(2).transpose(1, 2))
    return torch.cat(out)


def ward(vectors: np.ndarray, k: int) -> np.ndarray:
    return WardClusterer(k).fit_predict(Embeddings.per_image(np.asarray(vectors, np.float32))).labels


def fmt(s) -> str:
    return f"{s.nmi:.3f} / {s.ari:.3f} / {s.f1_micro:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_set("mtd"), help="a labelled set (default: $ANOMALY_CLUSTERING_DATA or ../shared/data, mtd/test)")
    ap.add_argument("--subset", type=int, default=400, help="stratified subset size (0: every image)")
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE)
    ap.add_argument("--bags", nargs="+", default=["512:16:pool", "256:16:pool", "224:28:local3"], help="input_px:grid:pool|local3")
    ap.add_argument("--taus", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--linkages", nargs="+", default=["average", "complete"])
    args = ap.parse_args()
    images = stratified(load_image_set(args.data), args.subset)
    labels = labels_of(images)
    k = len(np.unique(labels))
    print(f"{len(images)} images, K = {k}, backbone {args.backbone}; paper (MTD, all images, WRN50): "
          + "; ".join(f"{m} {v[0]:.3f}/{v[1]:.3f}/{v[2]:.3f}" for m, v in PAPER_MTD.items()))
    print("\n| bags (input px, grid, aggregation) | method | variant | NMI / ARI / F1 | s |")
    print("|---|---|---|---|---|")
    with runtime.settings(quiet=True):
        for setting in args.bags:
            size, grid, aggregation = setting.split(":")
            feats = extract_features(images, FeatureSpec(args.backbone, (), int(size), None))
            tag = f"{size}, {grid}×{grid}, {aggregation}"
            avg = np.concatenate([feats.batch(np.arange(i, min(len(images), i + 64))).mean(dim=(2, 3)).numpy() for i in range(0, len(images), 64)])
            print(f"| {tag} | average (floor) | mean pooling + Ward | {fmt(clustering_scores(labels, ward(avg, k)))} | – |", flush=True)
            bags = bags_of(feats, int(grid), aggregation)
            t0 = time.perf_counter()
            directed, score = nearest_patch_reductions(bags, 8)
            sec = time.perf_counter() - t0
            dist = torch.maximum(directed, directed.T).numpy().astype(np.float64)
            mh = ward(classical_mds(dist), k)
            print(f"| {tag} | max-hausdorff | classical MDS + Ward (ours) | {fmt(clustering_scores(labels, mh))} | {sec:.0f} |", flush=True)
            condensed = squareform(dist, checks=False)
            coords = classical_mds(dist)
            for method in args.linkages:
                pred = fcluster(linkage(condensed, method=method), k, criterion="maxclust") - 1
                print(f"| {tag} | max-hausdorff | {method} linkage on the distances | {fmt(clustering_scores(labels, pred))} | – |", flush=True)
                pred = AgglomerativeClustering(n_clusters=k, linkage=method).fit_predict(coords)
                print(f"| {tag} | max-hausdorff | classical MDS + {method} linkage | {fmt(clustering_scores(labels, pred))} | – |", flush=True)
            for tau in args.taus:
                w = torch.softmax(score / (tau * score.median().clamp_min(1e-12)), dim=1)
                vec = torch.einsum("npc,np->nc", bags, w).numpy()
                mark = " (ours)" if tau == 0.1 else ""
                print(f"| {tag} | weighted-average | τ = {tau} × median{mark} | {fmt(clustering_scores(labels, ward(vec, k)))} | – |", flush=True)


if __name__ == "__main__":
    main()
