"""FCA speed: a plain per-position reference (written straight from the notes) against the vectorised version.

Prints seconds per image for both on real backbone features (equal maps: max abs difference reported), and the cost of
the fca-vae stages (features, VAE fit, FCA) with peak memory for a few set sizes.

    ANOMALY_CLUSTERING_CACHE=/work/cache nice python benchmarks/fca_speed.py --data /work/shared/data/mtd/test \
        --reference_images 2 --fast_images 10 --sizes 50 200
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from scipy import ndimage

from anomaly_clustering.features_ops import scale_per_instance


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/mtd/test")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--backbone_weights", default=None)
    ap.add_argument("--input_size", type=int, default=512)
    ap.add_argument("--reference_images", type=int, default=2)
    ap.add_argument("--fast_images", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="*", default=[50, 200])
    ap.add_argument("--vae_iterations", type=int, default=None, help="default: the localizer's default")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec, extract_features
    from anomaly_clustering.data import load_image_set
    from anomaly_clustering.plugins.fca.localizer import FCAVAELocalizer
    from anomaly_clustering.plugins.fca.torch_model import FCAParams, fca_map

    images = load_image_set(args.data)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    spec = FeatureSpec(args.backbone, (), args.input_size, args.backbone_weights)
    probe = images.subset(sorted(order[: max(args.reference_images, args.fast_images)]))
    feats = extract_features(probe, spec)
    print(f"backbone {args.backbone}, input {args.input_size}px, features {feats.shape[1:]} (C×h×w), threads {args.threads}")

    params = FCAParams()
    diffs, t_ref, t_fast = [], [], []
    for i in range(args.reference_images):
        x = scale_per_instance(feats[i][None])[0]
        t = time.perf_counter()
        ref_map = reference_fca(x.numpy().astype(np.float64))
        t_ref.append(time.perf_counter() - t)
        fast_map = fca_map(x, params).numpy()
        diffs.append(float(np.abs(ref_map - fast_map).max()))
        rel = diffs[-1] / float(np.abs(ref_map).max())
        print(f"  image {i}: reference {t_ref[-1]:.2f} s, max |ref − fast| {diffs[-1]:.2e} (relative to map max {rel:.1e})")
    fca_map(scale_per_instance(feats[0][None])[0], params)  # warm-up
    for i in range(args.fast_images):
        x = scale_per_instance(feats[i][None])[0]
        t = time.perf_counter()
        fca_map(x, params)
        t_fast.append(time.perf_counter() - t)
    ref_s, fast_s = float(np.mean(t_ref)), float(np.mean(t_fast))
    print("\n| FCA implementation | s / image | speed-up | max abs diff |")
    print("|---|---|---|---|")
    print(f"| reference (per position, NumPy, from the notes) | {ref_s:.3f} | 1× | – |")
    print(f"| fast (vectorised, chunked) | {fast_s:.3f} | {ref_s / fast_s:.1f}× | {max(diffs):.2e} |")

    print("\n| images | features s/img | VAE fit s (total) | FCA s/img | total s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    with runtime.settings(quiet=True):
        for n in args.sizes:
            subset = images.subset(sorted(order[:n]))
            t0 = time.perf_counter()
            extract_features(subset, spec)
            t_feat = time.perf_counter() - t0
            kw = {} if args.vae_iterations is None else {"vae_iterations": args.vae_iterations}
            loc = FCAVAELocalizer(backbone=args.backbone, backbone_weights=args.backbone_weights, input_size=args.input_size, **kw)
            out = loc.fit_predict(subset)
            tm = out.info["timings"]
            print(f"| {n} | {t_feat / n:.3f} | {tm['vae_fit_s']:.1f} | {tm['fca_s'] / n:.3f} | {time.perf_counter() - t0:.1f} | {peak_rss_mb():.0f} |")


if __name__ == "__main__":
    main()
