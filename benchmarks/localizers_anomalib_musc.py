"""Localization quality and cost of patchcore (reference / blind) and musc on the real sets.

PRO@0.3, pixel AUROC and image AUROC per set (first ``--max_images`` images of each test folder, all types, in
sorted order; patchcore-reference only where the set has train/good), then MuSc's seconds per image and peak
memory (tracemalloc + ru_maxrss) at growing set sizes. Prints the backbone used.

    ANOMALY_CLUSTERING_CACHE=/work/cache nice -n 10 python benchmarks/localizers_anomalib_musc.py --max_images 60
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from anomaly_clustering import runtime
from anomaly_clustering.data import load_ground_truth, load_image_set
from anomaly_clustering.metrics import localization_scores
from anomaly_clustering.plugins.anomalib_models.patchcore import PatchcoreLocalizer
from anomaly_clustering.plugins.musc.localizer import MuScLocalizer

DATA = Path("/work/shared/data")


def subset(images, n: int, seed: int = 0):
    if n and len(images) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
        return images.subset(keep.tolist())
    return images


def score(maps, images) -> dict:
    gt = load_ground_truth(images)
    masks = np.stack([gt.load_mask(i, maps.map_size) for i in range(len(images))]) if gt.has_masks else None
    anomalous = np.array([lab.lower() not in ("good", "ok", "normal") for lab in gt.labels])
    s = localization_scores(maps.maps, maps.scores, masks, anomalous)
    return {"pro@0.3": s.pro_30, "auroc_px": s.auroc_pixel, "auroc_img": s.auroc_image}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="*", default=["mvtec_bottle", "mtd", "neu_det"])
    ap.add_argument("--max_images", type=int, default=60)
    ap.add_argument("--input_size", type=int, default=256)
    ap.add_argument("--scaling", nargs="*", type=int, default=[50, 200])
    ap.add_argument("--scaling_set", default="mtd")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with runtime.settings(quiet=True):
        for name in args.sets:
            images = subset(load_image_set(DATA / name / "test"), args.max_images)
            train = DATA / name / "train" / "good"
            runs = {"musc": (MuScLocalizer(input_size=args.input_size), None),
                    "patchcore-blind": (PatchcoreLocalizer(input_size=args.input_size), None)}
            if train.is_dir():
                runs["patchcore-reference"] = (PatchcoreLocalizer(input_size=args.input_size), subset(load_image_set(train), args.max_images))
            for method, (loc, normal) in runs.items():
                t = time.time()
                maps = loc.fit_predict(images, normal)
                dt = time.time() - t
                res = {k: (None if v is None else round(v, 4)) for k, v in score(maps, images).items()}
                print(f"{name:13s} {method:20s} n={len(images):4d} backbone={maps.info['backbone']} {res} {dt / len(images):.3f} s/img", flush=True)
        pool = load_image_set(DATA / args.scaling_set / "test")
        for n in args.scaling:
            images = subset(pool, n)
            import tracemalloc

            tracemalloc.start()
            t = time.time()
            maps = MuScLocalizer(input_size=args.input_size).fit_predict(images)
            dt = time.time() - t
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"musc scaling {args.scaling_set} n={len(images)} backbone={maps.info['backbone']} input={args.input_size} "
                  f"{dt / len(images):.3f} s/img (incl. features) total {dt:.1f} s, peak traced {peak / 2**20:.0f} MiB, "
                  f"process max RSS {rss:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
