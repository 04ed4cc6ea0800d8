"""FCA+VAE's maps beside each patch's distance to its nearest patch in other images of the set (issue #19).

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks B
    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/nn_evidence.py --sets deeppcb mtd --seeds 0 [--out nn.json]

FCA scores a patch against its own image, so a structure that is rare inside one image but common across the set (a
trace's corner on a circuit board, a pad) is as bright as a defect, and the image score (the map's maximum) ranks
DeepPCB's good boards with the defective ones (image AUROC 64). The across-set evidence here reuses FCA's own
backbone features (the stage cache's ``fca-vae`` feature store: tf_efficientnet_lite0 at 512 px, 152 channels, 64×64),
pooled 2×2 to 32×32 and L2-normalised; every patch's cosine distance to its nearest patch among ``--bank`` images drawn
from the set (seeded; the image's own patches excluded), by exact search (faiss ``IndexFlatIP``). Each map is
standardised by its set-wide median / MAD and the two are summed (or: the geometric mean of their excess over the
median, their minimum — both must agree); the image score is the maximum (or the top-1 % mean). Also measured:
FCA's score minus the median FCA score of the patch's 10 nearest bank patches ("calibrated": a structure whose
look-alikes also score high is normal). Prints PRO@0.3, pixel and image AUROC (at 32×32, the masks resized) per
set and seed, and seconds per image of the search.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classifier_ablation import _fit  # noqa: E402  (benchmarks/ is the script folder)
from view_harness import add_suite_arguments, labelled_suite_sets, localization_row  # noqa: E402


def robust_z(a: np.ndarray) -> np.ndarray:
    """Values standardised by their median and MAD over the whole set."""
    med = float(np.median(a))
    return (a - med) / (float(np.median(np.abs(a - med))) + 1e-9)


def pooled_patches(feats) -> np.ndarray:
    """N×P×C: the feature maps pooled 2×2, one L2-normalised row per patch (read in chunks of 64 images)."""
    parts = []
    for start in range(0, len(feats), 64):
        x = torch.nn.functional.avg_pool2d(feats.batch(np.arange(start, min(start + 64, len(feats)))), 2)
        parts.append(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1]).numpy())
    x = np.concatenate(parts)
    return x / np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-6)


def nn_distances(x: np.ndarray, fca: np.ndarray, bank: int, seed: int, neighbours: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(N×P distance of each pooled patch ``x`` to its nearest bank patch of another image, N×P calibrated FCA score)."""
    import faiss

    n, _, c = x.shape
    s = torch.nn.functional.max_pool2d(torch.from_numpy(fca[:, None].astype(np.float32)), 2)[:, 0].reshape(n, -1).numpy()
    p = x.shape[1]
    chosen = np.random.default_rng(seed).choice(n, min(bank, n), replace=False)
    index = faiss.IndexFlatIP(c)
    index.add(np.ascontiguousarray(x[chosen].reshape(-1, c)))
    owner, bank_s = np.repeat(chosen, p), s[chosen].reshape(-1)
    k = p + neighbours if len(chosen) > 1 else p  # enough to step over the image's own patches when it is in the bank
    dist, calibrated = np.zeros((n, p), np.float32), np.zeros((n, p), np.float32)
    for i in range(n):
        sim, idx = index.search(np.ascontiguousarray(x[i]), min(k, index.ntotal) if i in chosen else neighbours)
        sim = np.where(owner[idx] == i, -np.inf, sim)
        order = np.argsort(-sim, axis=1)[:, :neighbours]
        sim, idx = np.take_along_axis(sim, order, 1), np.take_along_axis(idx, order, 1)
        dist[i] = 1.0 - sim[:, 0]
        calibrated[i] = s[i] - np.median(bank_s[idx], axis=1)
    return dist, calibrated


def main() -> None:
    from anomaly_clustering.backbones import FeatureSpec, extract_features

    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer="fca-vae")
    ap.add_argument("--bank", type=int, default=64, help="images drawn from the set as the nearest-neighbour bank")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for s, images, gt, true, normal in labelled_suite_sets(args):
        masks = np.stack([gt.load_mask(i, (32, 32)) for i in range(len(images))]) if gt.has_masks else None
        patches = pooled_patches(extract_features(images, FeatureSpec("tf_efficientnet_lite0", (), 512)))
        for seed in (int(v) for v in args.seeds.split(",")):
            fca = np.asarray(_fit(images, args.localizer, "average", seed, len(set(true.tolist())), []).maps.maps)
            start = time.perf_counter()
            dist, calibrated = nn_distances(patches, fca, args.bank, seed)
            seconds = (time.perf_counter() - start) / len(images)
            n = len(images)
            own = torch.nn.functional.max_pool2d(torch.from_numpy(fca[:, None].astype(np.float32)), 2)[:, 0].numpy()
            z_own, z_dist = robust_z(own), robust_z(dist.reshape(n, 32, 32))
            variants = {"fca-vae": own, "nearest-neighbour distance": dist.reshape(n, 32, 32),
                        "fca-vae + distance (z-scores summed)": z_own + z_dist,
                        "both, geometric (excess over median)": np.sqrt(np.clip(z_own, 0, None) * np.clip(z_dist, 0, None)),
                        "both, min": np.minimum(z_own, z_dist),
                        "fca-vae calibrated by its neighbours": calibrated.reshape(n, 32, 32)}
            scores = {name: m.reshape(n, -1).max(1) for name, m in variants.items()}
            summed = variants["fca-vae + distance (z-scores summed)"].reshape(n, -1)
            variants["summed, image score top-1 % mean"] = variants["fca-vae + distance (z-scores summed)"]
            scores["summed, image score top-1 % mean"] = np.sort(summed, 1)[:, -max(1, summed.shape[1] // 100):].mean(1)
            for name, m in variants.items():
                rows.append(localization_row(s.name, seed, name, m, scores[name], masks, ~normal, key="maps", width=38,
                                             suffix=f"   search {seconds:.2f} s/image", search_s_per_image=seconds))
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
