"""PatchCore's greedy k-center coreset: ours (``coreset.py``) against anomalib's KCenterGreedy on real embeddings.

Embeds a stratified subset of a set with the patchcore localizer's own network (Lite0 stages 2+3, locally aware
patches), then selects the same number of rows with both and prints seconds, steps per second and the covering
radius (max over rows of the distance to the nearest selected row, in the original space) of each:

    ANOMALY_CLUSTERING_CACHE=CACHE nice python benchmarks/coreset_speed.py --data ../shared/data/mtd/test \
        --images 100 --ratios 0.01 0.1 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from data_paths import default_set  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download


def covering_radius(x: torch.Tensor, chosen: torch.Tensor, chunk: int = 8192) -> float:
    c = x[chosen]
    return max(float(torch.cdist(x[i : i + chunk], c).min(dim=1).values.max()) for i in range(0, len(x), chunk))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_set("mtd"), help="a labelled set (default: $ANOMALY_CLUSTERING_DATA or ../shared/data, mtd/test)")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--input_size", type=int, default=256)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--anomalib_max_steps", type=int, default=2000, help="skip anomalib above this many picks (its time is steps × its s/step)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from anomalib.models.components import KCenterGreedy

    from anomaly_clustering import runtime
    from anomaly_clustering.data import load_image_set
    from anomaly_clustering.plugins.anomalib_models.coreset import greedy_coreset
    from anomaly_clustering.plugins.anomalib_models.patchcore import PatchcoreLocalizer

    images = load_image_set(args.data)
    pick = np.sort(np.random.default_rng(0).permutation(len(images))[: args.images])
    images = images.subset(pick.tolist())
    with runtime.settings(quiet=True):
        emb, _ = PatchcoreLocalizer(input_size=args.input_size)._embed(images)
    x = emb.reshape(-1, emb.shape[-1])
    print(f"{len(images)} images at {args.input_size} px → bank of {len(x)} × {x.shape[1]} patch embeddings, {args.threads} threads")
    print("\n| picks (ratio) | method | s | steps / s | covering radius |")
    print("|---|---|---|---|---|")
    for ratio in args.ratios:
        n = max(1, int(len(x) * ratio))
        t = time.perf_counter()
        ours = greedy_coreset(x, n, seed=0)
        t_ours = time.perf_counter() - t
        print(f"| {n} ({ratio:g}) | ours (norm-expanded distances; projected only above 256 dims) | {t_ours:.1f} | {n / t_ours:.0f} | {covering_radius(x, ours):.3f} |", flush=True)
        if n <= args.anomalib_max_steps:
            torch.manual_seed(0)
            t = time.perf_counter()
            theirs = torch.as_tensor(KCenterGreedy(x, ratio).select_coreset_idxs())
            t_theirs = time.perf_counter() - t
            print(f"| {n} ({ratio:g}) | anomalib KCenterGreedy (sparse projection, eps 0.9) | {t_theirs:.1f} | {n / t_theirs:.0f} | {covering_radius(x, theirs):.3f} |", flush=True)
        else:
            print(f"| {n} ({ratio:g}) | anomalib KCenterGreedy | not run (> {args.anomalib_max_steps} picks) | – | – |", flush=True)


if __name__ == "__main__":
    main()
