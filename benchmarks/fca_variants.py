"""Cheaper FCA variants against exact FCA: seconds per image and pixel AUROC on an MTD subset (good included).

FCA's cost is linear in the channel count (a 49-value sort per position and channel), so the obvious faster
variants reduce channels before FCA: group means of g channels, the top-k principal components of each image's
features (re-scaled to 0–1), or a fixed random projection to k channels. The issue's bar for a faster variant is an
AUROC-pixel within 0.5 points of exact FCA on the real data.

    python benchmarks/fca_variants.py --variants exact group-4 group-8 pca-16 pca-32 pca-48 rand-32

Features: tf_efficientnet_lite0 at 512 px (152×64×64), computed (or read from the cache) for the subset only.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from anomaly_clustering import runtime
from anomaly_clustering.backbones import FeatureSpec, extract_features
from anomaly_clustering.data import load_ground_truth, load_image_set
from anomaly_clustering.features_ops import scale_per_instance
from anomaly_clustering.plugins.blind_lca.torch_model import fca_map

from data_paths import default_set  # noqa: E402  (benchmarks/ is the script folder)

os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")  # benchmarks use local weights only, never a hub download

SUBSET = {"good": 40, "blowhole": 25, "break": 25, "crack": 25, "fray": 20, "uneven": 25}


def reduce_channels(x: torch.Tensor, variant: str) -> torch.Tensor:
    """C×H×W scaled features → the variant's channels (``exact`` returns x)."""
    if variant == "exact":
        return x
    kind, k = variant.split("-")
    k = int(k)
    c = x.shape[0]
    if kind == "group":
        return x[: c - c % k].reshape(c // k, k, *x.shape[1:]).mean(1)
    flat = x.flatten(1)
    if kind == "pca":
        centred = flat - flat.mean(1, keepdim=True)
        u = torch.linalg.svd(centred @ centred.T)[0]
        z = u[:, :k].T @ centred
    elif kind == "rand":
        z = torch.randn(k, c, generator=torch.Generator().manual_seed(0)) / c**0.5 @ flat
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return scale_per_instance(z.view(k, *x.shape[1:])[None])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["exact", "group-4", "group-8", "pca-16", "pca-32", "pca-48", "rand-32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=default_set("mtd"), help="MTD's test folder (default: $ANOMALY_CLUSTERING_DATA or ../shared/data, mtd/test)")
    ap.add_argument("--eval_size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = load_image_set(args.data)
    labels = np.array(load_ground_truth(images).labels)
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), min(n, int((labels == c).sum())), replace=False) for c, n in SUBSET.items()]))
    images = images.subset(keep.tolist())
    gt = load_ground_truth(images)
    masks = np.stack([gt.load_mask(i, (args.eval_size, args.eval_size)) for i in range(len(images))]).astype(bool)
    with runtime.settings(quiet=True):
        feats = extract_features(images, FeatureSpec("tf_efficientnet_lite0", (), 512, None))
    print(f"MTD subset: {len(images)} images ({int(masks.any((1, 2)).sum())} with masks), {args.threads} thread(s)\n")
    print("| variant | channels | s / image (FCA only) | AUROC-pixel | Δ vs exact |")
    print("|---|---|---|---|---|")
    exact_auc = None
    for variant in args.variants:
        maps, seconds = [], 0.0
        for i in range(len(images)):
            x = scale_per_instance(feats[i][None].float())[0]
            t0 = time.perf_counter()
            z = reduce_channels(x, variant)
            m = fca_map(z)
            seconds += time.perf_counter() - t0
            maps.append(F.interpolate(m[None, None], size=(args.eval_size,) * 2, mode="bilinear", align_corners=False)[0, 0].numpy())
        auc = 100 * roc_auc_score(masks.ravel(), np.stack(maps).ravel())
        exact_auc = auc if variant == "exact" else exact_auc
        delta = "–" if exact_auc is None or variant == "exact" else f"{auc - exact_auc:+.2f}"
        print(f"| {variant} | {z.shape[0]} | {seconds / len(images):.3f} | {auc:.2f} | {delta} |", flush=True)


if __name__ == "__main__":
    main()
