"""FCA speed: a plain per-position reference (written straight from the notes) against the vectorised version.

Prints seconds per image for both on real backbone features (equal maps: max abs difference reported), and the cost of
the fca-vae stages (features, VAE fit, FCA) with peak memory for a few set sizes.

    ANOMALY_CLUSTERING_CACHE=CACHE nice python benchmarks/fca_speed.py --data ../shared/data/mtd/test \
        --reference_images 2 --fast_images 10 --sizes 50 200 800
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from scipy import ndimage

from anomaly_clustering.features_ops import scale_per_instance

from data_paths import default_set  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download


def reference_fca(x: np.ndarray, patch: int = 7, sigma_p: float = 3.0, sigma_s: float = 1.0, post_sigma: float = 1.0, border: int = 5) -> np.ndarray:
    """FCA as the notes describe it, one position at a time (C×H×W float array → H×W map)."""
    c, h, w = x.shape
    r = patch // 2
    # reference distribution: sort each non-overlapping tile per channel, element-wise median over tiles
    tiles = []
    for i in range(0, h - patch + 1, patch):
        for j in range(0, w - patch + 1, patch):
            tiles.append(np.sort(x[:, i : i + patch, j : j + patch].reshape(c, -1), axis=1))
    ref = np.median(np.stack(tiles), axis=0)  # C×49
    k1 = np.exp(-0.5 * ((np.arange(patch) - r) / sigma_p) ** 2)
    weight = np.outer(k1, k1) / np.outer(k1, k1).sum()
    xp = np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
    acc = np.zeros((h + 2 * r, w + 2 * r))
    for i in range(h):
        for j in range(w):
            values = xp[:, i : i + patch, j : j + patch].reshape(c, -1)
            order = np.argsort(values, axis=1, kind="stable")  # sort per channel
            diff = np.abs(np.take_along_axis(values, order, axis=1) - ref)  # L1 per rank
            contrib = np.zeros_like(diff)
            np.put_along_axis(contrib, order, diff, axis=1)  # back to the cell that held the value
            patch_map = contrib.mean(axis=0).reshape(patch, patch)
            patch_map = ndimage.gaussian_filter(patch_map, sigma_s, mode="mirror", truncate=2.0)  # 5×5 blur
            acc[i : i + patch, j : j + patch] += patch_map * weight
    amap = ndimage.gaussian_filter(acc[r : r + h, r : r + w], post_sigma, mode="mirror", truncate=2.0)
    amap[:border] = 0
    amap[-border:] = 0
    amap[:, :border] = 0
    amap[:, -border:] = 0
    return amap.astype(np.float32)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fast_timings(xs: list[torch.Tensor], workers: int) -> float:
    """Seconds per image of the fast FCA over ``xs``: one thread, or ``workers`` threads of one torch thread each
    (what the localizer does on a multi-core CPU)."""
    from concurrent.futures import ThreadPoolExecutor

    from anomaly_clustering.plugins.blind_lca.torch_model import fca_map

    torch.set_num_threads(1)
    fca_map(xs[0])  # warm-up
    t = time.perf_counter()
    if workers <= 1:
        for x in xs:
            fca_map(x)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fca_map, xs))
    return (time.perf_counter() - t) / len(xs)


def compare(label: str, xs: list[torch.Tensor], reference_images: int, workers: int) -> None:
    """One row per implementation: reference vs fast (1 thread) vs fast (``workers`` threads), equal maps."""
    from anomaly_clustering.plugins.blind_lca.torch_model import fca_map

    torch.set_num_threads(1)
    diffs, rels, t_ref = [], [], []
    for x in xs[:reference_images]:
        t = time.perf_counter()
        ref_map = reference_fca(x.numpy().astype(np.float64))
        t_ref.append(time.perf_counter() - t)
        fast_map = fca_map(x).numpy()
        diffs.append(float(np.abs(ref_map - fast_map).max()))
        rels.append(diffs[-1] / float(np.abs(ref_map).max()))
    ref_s = float(np.mean(t_ref))
    one = fast_timings(xs, 1)
    many = fast_timings(xs, workers)
    print(f"| {label} | reference (per position, NumPy, from the notes), 1 thread | {ref_s:.3f} | 1× | – |")
    print(f"| {label} | fast, 1 thread | {one:.3f} | {ref_s / one:.1f}× | {max(diffs):.1e} (relative {max(rels):.1e}) |")
    print(f"| {label} | fast, {workers} worker threads (the localizer's default here) | {many:.3f} | {ref_s / many:.1f}× | same maps |")


def one_size(args: argparse.Namespace) -> None:
    """Features, VAE fit and FCA of ``args.one_size`` images in this (fresh) process, with its peak memory."""
    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec, extract_features
    from anomaly_clustering.data import load_image_set
    from anomaly_clustering.plugins.blind_lca.localizer import FCAVAELocalizer

    images = load_image_set(args.data)
    order = np.random.default_rng(0).permutation(len(images))
    subset = images.subset(sorted(order[: args.one_size]))
    spec = FeatureSpec(args.backbone, (), args.input_size, args.backbone_weights)
    n = len(subset)
    with runtime.settings(quiet=True):
        t0 = time.perf_counter()
        extract_features(subset, spec)
        t_feat = time.perf_counter() - t0
        kw = {} if args.vae_iterations is None else {"vae_iterations": args.vae_iterations}
        loc = FCAVAELocalizer(backbone=args.backbone, backbone_weights=args.backbone_weights, input_size=args.input_size, **kw)
        out = loc.fit_predict(subset)
    tm = out.info["timings"]
    print(f"| {n} | {t_feat / n:.3f} | {tm['vae_fit_s']:.1f} | {tm['fca_s'] / n:.3f} | {time.perf_counter() - t0:.1f} | {peak_rss_mb():.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_set("mtd"), help="a labelled set (default: $ANOMALY_CLUSTERING_DATA or ../shared/data, mtd/test)")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--backbone_weights", default=None)
    ap.add_argument("--input_size", type=int, default=512)
    ap.add_argument("--reference_images", type=int, default=2)
    ap.add_argument("--fast_images", type=int, default=10)
    ap.add_argument("--paper_width", type=int, default=512, help="also compare on random C×64×64 maps of this width (0: skip)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sizes", type=int, nargs="*", default=[50, 200])
    ap.add_argument("--vae_iterations", type=int, default=None, help="default: the localizer's default")
    ap.add_argument("--one_size", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_size:
        return one_size(args)

    from anomaly_clustering.backbones import FeatureSpec, extract_features
    from anomaly_clustering.data import load_image_set

    images = load_image_set(args.data)
    order = np.random.default_rng(0).permutation(len(images))
    spec = FeatureSpec(args.backbone, (), args.input_size, args.backbone_weights)
    probe = images.subset(sorted(order[: max(args.reference_images, args.fast_images)]))
    feats = extract_features(probe, spec)
    xs = [scale_per_instance(feats[i][None])[0].float() for i in range(len(probe))]
    print(f"backbone {args.backbone}, input {args.input_size}px, features {tuple(feats.shape[1:])} (C×h×w), {args.workers} cores")
    print("\n| maps | FCA implementation | s / image | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    compare(f"{args.backbone} {tuple(feats.shape[1:])}", xs, args.reference_images, args.workers)
    if args.paper_width:
        gen = torch.Generator().manual_seed(0)
        wide = [torch.rand(args.paper_width, 64, 64, generator=gen) for _ in range(min(4, args.fast_images))]
        compare(f"random ({args.paper_width}, 64, 64)", wide, min(args.reference_images, 1), args.workers)

    print("\n| images | features s/img | VAE fit s (total) | FCA s/img | total s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:  # a fresh process and an empty feature cache per size: real costs, and each size's own peak
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, ANOMALY_CLUSTERING_CACHE=cache)
            cmd = [sys.executable, __file__, "--one_size", str(n), "--data", args.data, "--backbone", args.backbone, "--input_size", str(args.input_size)]
            cmd += ["--backbone_weights", args.backbone_weights] if args.backbone_weights else []
            cmd += ["--vae_iterations", str(args.vae_iterations)] if args.vae_iterations else []
            subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
