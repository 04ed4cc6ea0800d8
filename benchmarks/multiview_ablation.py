"""Which views and clusterers hold on every suite set: an ablation of the multi-view classifier at the true K.

    ANOMALY_CLUSTERING_CACHE=/some/cache python benchmarks/multiview_ablation.py --suite benchmarks/suite.yaml \
        --localizer fca --out ablation.json

Per set: the suite's images (its subset), the localizer's maps (stage cache), the Average floor (Sohn et al.: mean
pooled default features + Ward) and every variant's NMI, all at the true K, with the gap closed g = (NMI − floor) /
(1 − floor). Variants are views (whole-image context, full-resolution anomaly crop, their statistics) and clusterers
(Ward, normal-first, co-association consensus over seeds). Deterministic variants run once; seeded ones per seed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _ward(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)


def _std_block(b: np.ndarray) -> np.ndarray:
    b = b - b.mean(0)
    return b / max(float(np.linalg.norm(b, axis=1).mean()), 1e-12)


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec
    from anomaly_clustering.benchmarking import gap_closed, load_suite, select_images
    from anomaly_clustering.data import load_ground_truth
    from anomaly_clustering.pipeline import Pipeline, PipelineConfig, StageSpec
    from anomaly_clustering.plugins.blind_lca.sohn import AveragePooling
    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer, ConsensusClusterer
    from anomaly_clustering.plugins.multiview.views import anomaly_boxes, view_vectors
    from anomaly_clustering.records import Embeddings

    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="benchmarks/suite.yaml")
    ap.add_argument("--data_root", default=None)
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument("--localizer", default="fca")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        t0 = time.perf_counter()
        images = select_images(s.data, s.subset, s.subset_seed, s.exclude_good)
        true, _ = load_ground_truth(images).label_ids()
        k = len(set(true.tolist()))
        conf = PipelineConfig(StageSpec(args.localizer), StageSpec("otsu"), StageSpec("average"), StageSpec("ward"), n_clusters=k)
        res = Pipeline(conf, runtime.cache_dir(), quiet=True).fit(images)
        maps = res.maps
        floor = nmi(true, res.clustering.labels)
        blocks = {}
        with runtime.settings(quiet=True):
            for size in (384,):
                blocks[f"ctx{size}"] = view_vectors(images, "context", FeatureSpec("tf_efficientnet_lite0", ("3", "4"), size), ("mean", "std"))
            boxes = anomaly_boxes(np.asarray(maps.maps), np.asarray(maps.image_sizes))
            blocks["crop224"] = view_vectors(images, "crop", FeatureSpec("tf_efficientnet_lite0", ("3", "4"), 224), ("mean", "std"), boxes)
        half = lambda b: b[:, : b.shape[1] // 2]  # the mean statistics only (mean block comes first per stage? no: per stage mean, std)
        row = {"N": len(images), "K": k, "floor": floor, "variants": {}}
        variants = {
            "ctx384 mean+std": [_std_block(blocks["ctx384"])],
            "crop224 mean+std": [_std_block(blocks["crop224"])],
            "ctx384 + crop224": [_std_block(blocks["ctx384"]), _std_block(blocks["crop224"])],
            "avg512 + ctx384 + crop224": [_std_block(AveragePooling().transform(images, maps, res.regions).vectors), _std_block(blocks["ctx384"]), _std_block(blocks["crop224"])],
        }
        scores = np.asarray(maps.scores, np.float64)
        for name, parts in variants.items():
            x = np.concatenate(parts, 1)
            row["variants"][f"{name} | ward"] = [nmi(true, _ward(x, k))]
            emb = Embeddings.per_image(x, {"image_scores": scores.tolist()})
            row["variants"][f"{name} | normal-first"] = [nmi(true, NormalFirstClusterer(n_clusters=k).fit_predict(emb).labels)]
            row["variants"][f"{name} | consensus"] = [nmi(true, ConsensusClusterer(n_clusters=k, seed=sd).fit_predict(emb).labels) for sd in seeds]
        row["seconds"] = time.perf_counter() - t0
        results[s.name] = row
        print(f"\n{s.name}: N={len(images)} K={k} floor {floor:.3f} ({row['seconds']:.0f} s)", flush=True)
        for name, vals in row["variants"].items():
            g = [gap_closed(v, floor) for v in vals]
            print(f"  {name:<45} NMI {np.mean(vals):.3f} ± {np.std(vals):.3f}   g {np.mean(g):+.3f} (min {min(g):+.3f})", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
