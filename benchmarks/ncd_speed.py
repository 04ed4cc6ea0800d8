"""MGViT-NCD (hybrid) training cost with and without the frozen-view cache: seconds per epoch, total, and NMI.

    export ANOMALY_CLUSTERING_CACHE=CACHE
    nice -n 10 python benchmarks/ncd_speed.py --crops 100,400 --epochs 5

Crops come from MTD's defect images with ground-truth masks (``oracle`` binarizer), stratified to ~N crops.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from anomaly_clustering import registry, runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.metrics import clustering_scores

from data_paths import default_set  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download


def labels_of(images) -> np.ndarray:
    kinds = [n.split("/")[0] for n in images.names]
    names = sorted(set(kinds))
    return np.array([names.index(k) for k in kinds])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=default_set("mtd"), help="a labelled set (default: $ANOMALY_CLUSTERING_DATA or ../shared/data, mtd/test)")
    ap.add_argument("--crops", default="100,400")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--input_size", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full = load_image_set(args.data, exclude=["good/*"])
    rng = np.random.default_rng(0)
    with runtime.settings(quiet=True):
        maps = registry.create("localizer", "color-stats", input_size=256).fit_predict(full)
        regions = registry.create("binarizer", "oracle").fit_transform(maps, full)
    per_image = np.bincount([r.image_index for r in regions.regions], minlength=len(full)).clip(1, None)
    print(f"hybrid MGViT (lite0 tokens), view {args.input_size} px, {args.epochs} epochs × {args.repeats} repeats, batch 32, "
          f"CPU {args.threads} thread(s); K = 5 on MTD defect images, oracle masks")
    for target in [int(x) for x in args.crops.split(",")]:
        order = rng.permutation(len(full))
        take = order[: int(np.searchsorted(np.cumsum(per_image[order]), target)) + 1]
        idx = np.sort(take)
        images = full.subset(idx.tolist())
        sub_maps = type(maps)(maps.maps[idx], maps.scores[idx], maps.image_sizes[idx])
        with runtime.settings(quiet=True):
            sub_regions = registry.create("binarizer", "oracle").fit_transform(sub_maps, images)
        labels = labels_of(images)
        for cache in (True, False):
            rep = registry.create("representation", "mgvit-ncd", n_clusters=5, epochs=args.epochs, repeats=args.repeats,
                                  lr=args.lr, input_size=args.input_size, cache_views=cache)
            with runtime.settings(quiet=True):
                t0 = time.perf_counter()
                rep.fit(images, sub_maps, sub_regions)
                t_fit = time.perf_counter() - t0
                emb = rep.transform(images, sub_maps, sub_regions)
                pred = registry.create("clusterer", "region-merge", n_clusters=5, temperature=50.0).fit_predict(emb).labels
            s = clustering_scores(labels, pred)
            epoch = np.mean(rep.epoch_seconds_)
            print(f"  {rep.n_crops_:4d} crops ({len(images)} images)  cache={str(cache):<5}  {epoch:6.2f} s/epoch  "
                  f"{t_fit:7.1f} s total fit (view cache {rep.cache_seconds_:.1f} s)  NMI {s.nmi:.3f}", flush=True)


if __name__ == "__main__":
    main()
