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
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_harness import add_suite_arguments, standardise, ward  # noqa: E402  (benchmarks/ is the script folder)


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec
    from anomaly_clustering.benchmarking import gap_closed, load_suite, select_images
    from anomaly_clustering.data import load_ground_truth
    from anomaly_clustering.pipeline import Pipeline, PipelineConfig, StageSpec
    from anomaly_clustering.plugins.sohn.representations import AveragePooling
    from anomaly_clustering.plugins.multiview.clusterers import NormalFirstClusterer, ConsensusClusterer
    from anomaly_clustering.plugins.multiview.views import anomaly_boxes, view_vectors
    from anomaly_clustering.records import Embeddings

    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer="fca")
    ap.add_argument("--subset", type=int, default=None, help="a smaller class-stratified subset than the suite's (seed 0)")
    ap.add_argument("--oracle", action="store_true", help="crops around the ground-truth masks instead of the maps (the ceiling)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for s in load_suite(args.suite, args.data_root):
        if args.sets and s.name not in args.sets:
            continue
        t0 = time.perf_counter()
        images = select_images(s.data, args.subset or s.subset, s.subset_seed, s.exclude_good)
        true, _ = load_ground_truth(images).label_ids()
        k = len(set(true.tolist()))
        conf = PipelineConfig(StageSpec(args.localizer), StageSpec("otsu"), StageSpec("average"), StageSpec("ward"), n_clusters=k)
        res = Pipeline(conf, runtime.cache_dir(), quiet=True).fit(images)
        maps = res.maps
        if args.oracle:
            gt = load_ground_truth(images)
            if not gt.has_masks:
                print(f"{s.name}: no masks, skipped for --oracle")
                continue
            import dataclasses

            masks = np.stack([gt.load_mask(i, maps.map_size) for i in range(len(images))]).astype(np.float32)
            maps = dataclasses.replace(maps, maps=masks, scores=masks.reshape(len(masks), -1).max(1))
        floor = nmi(true, res.clustering.labels)
        blocks = {}
        with runtime.settings(quiet=True):
            for size in (384,):
                blocks[f"ctx{size}"] = view_vectors(images, "context", FeatureSpec("tf_efficientnet_lite0", ("3", "4"), size), ("mean", "std"))
            boxes = anomaly_boxes(np.asarray(maps.maps), np.asarray(maps.image_sizes))
            blocks["crop224"] = view_vectors(images, "crop", FeatureSpec("tf_efficientnet_lite0", ("3", "4"), 224), ("mean", "std"), boxes)
        row = {"N": len(images), "K": k, "floor": floor, "variants": {}}
        blocks["avg512"] = AveragePooling().transform(images, maps, res.regions).vectors
        names = ["avg512", "ctx384", "crop224"]
        std = {n: standardise(blocks[n]) for n in names}
        scores = np.asarray(maps.scores, np.float64)
        from sklearn.metrics import silhouette_score

        from anomaly_clustering.plugins.multiview.clusterers import ViewSelectClusterer, view_subsets

        for subset in view_subsets(3):
            name = " + ".join(names[i] for i in subset)
            x = np.concatenate([std[names[i]] for i in subset], 1)
            labels = ward(x, k)
            row["variants"][f"{name} | ward"] = [nmi(true, labels)]
            row.setdefault("silhouette", {})[name] = float(silhouette_score(x, labels))
            if len(subset) >= 2 and "avg512" not in name:
                emb = Embeddings.per_image(x, {"image_scores": scores.tolist()})
                row["variants"][f"{name} | normal-first"] = [nmi(true, NormalFirstClusterer(n_clusters=k).fit_predict(emb).labels)]
                row["variants"][f"{name} | consensus"] = [nmi(true, ConsensusClusterer(n_clusters=k, seed=sd).fit_predict(emb).labels) for sd in seeds]
        x = np.concatenate([std[n] for n in names], 1)
        sel = ViewSelectClusterer(n_clusters=k).fit_predict(Embeddings.per_image(x, {"view_dims": [std[n].shape[1] for n in names], "views": names}))
        row["variants"]["view-select (silhouette) | ward"] = [nmi(true, sel.labels)]
        row["view_select"] = sel.info
        for name in ("ctx384", "crop224"):
            two = np.concatenate([std["ctx384"], 0.5 * std["crop224"]], 1) if name == "crop224" else np.concatenate([0.5 * std["ctx384"], std["crop224"]], 1)
            row["variants"][f"ctx384 + crop224, {name.split('2')[0].split('3')[0]} ×0.5 | ward"] = [nmi(true, ward(two, k))]
        row["seconds"] = time.perf_counter() - t0
        results[s.name] = row
        print(f"\n{s.name}: N={len(images)} K={k} floor {floor:.3f} ({row['seconds']:.0f} s)", flush=True)
        print(f"  silhouettes {row['silhouette']}  view-select chose {row['view_select']['views_chosen']}", flush=True)
        for name, vals in row["variants"].items():
            g = [gap_closed(v, floor) for v in vals]
            print(f"  {name:<45} NMI {np.mean(vals):.3f} ± {np.std(vals):.3f}   g {np.mean(g):+.3f} (min {min(g):+.3f})", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
