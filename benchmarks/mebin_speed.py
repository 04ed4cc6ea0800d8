"""MEBin speed: binarize 1 000 synthetic 256×256 anomaly maps (0–3 Gaussian blobs each) on the CPU.

    python benchmarks/mebin_speed.py [--n 1000] [--size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from anomaly_clustering import runtime
from anomaly_clustering.plugins.ncd.mebin import MEBin
from anomaly_clustering.records import AnomalyMaps

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download


def synthetic_maps(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    maps = 0.15 * rng.random((n, size, size), dtype=np.float32)
    counts = rng.integers(0, 4, n)
    for i in range(n):
        for _ in range(counts[i]):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            sigma = rng.uniform(0.02, 0.05) * size
            maps[i] += rng.uniform(0.6, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return maps, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    maps, planted = synthetic_maps(args.n, args.size)
    records = AnomalyMaps(maps, maps.reshape(args.n, -1).max(1), np.full((args.n, 2), args.size))
    with runtime.settings(quiet=True):
        t0 = time.perf_counter()
        regions = MEBin().fit_transform(records, None)
        seconds = time.perf_counter() - t0
    est = np.asarray(regions.info["counts"])
    print(f"MEBin: {args.n} maps of {args.size}×{args.size} in {seconds:.2f} s on the CPU ({args.threads} thread(s)), "
          f"{1000 * seconds / args.n:.2f} ms/map; estimated count = planted count for {np.mean(est == planted):.1%} of maps")


if __name__ == "__main__":
    main()
