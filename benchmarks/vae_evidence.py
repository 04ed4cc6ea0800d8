"""FCA+VAE's own across-set evidence: the VAE's residual beside FCA's map (issue #19).

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/vae_evidence.py --sets mtd deeppcb mvtec_bottle neu_det --seeds 0,1,2 [--out ve.json]

``fca-vae`` trains a VAE on the set's own (per-image min–max scaled) features and runs FCA on the residual
F − D(μ(F)). FCA then compares each patch with *its own image*, and its per-image scaling makes one image's map
incomparable with another's: the maximum ranks DeepPCB's boards near chance (AUROC 64) and the held-out leather
inverted. The residual's norm ‖F − D(μ(F))‖ per position is across-set evidence for free (the VAE learned what the
whole set looks like: what every image has is reconstructed, what few have is not), on one scale for every image.
Measured here, on the fitted ``fca-vae`` of the stage cache (no new training): the residual norm as a map and as an
image score, FCA's map with the residual's image score, both maps merged (robust z-scores summed), and FCA's map
weighted by the residual. Prints PRO@0.3, pixel and image AUROC at the feature grid (64×64, masks resized) per set,
seed and variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nn_evidence import robust_z  # noqa: E402
from view_harness import add_suite_arguments, fitted_on_suite, grid_masks, localization_row  # noqa: E402  (benchmarks/ is the script folder)


def residual_norms(localizer, images) -> np.ndarray:
    """N×h×w: the norm over channels of the fitted VAE's residual of each image's scaled features."""
    from anomaly_clustering.backbones import extract_features
    from anomaly_clustering.features_ops import scale_per_instance

    feats = extract_features(images, localizer._spec())
    out = []
    with torch.no_grad():
        for i in range(len(images)):
            out.append(localizer._fca_input(scale_per_instance(feats[i][None].float()))[0].norm(dim=0).numpy())
    return np.stack(out)


def top_mean(maps: np.ndarray, fraction: float = 0.01) -> np.ndarray:
    """Mean of each map's top ``fraction`` of values."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(flat.shape[1] * fraction)))
    return np.sort(flat, 1)[:, -k:].mean(1)


def variants(fca: np.ndarray, res: np.ndarray, res_post: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (maps, image scores); ``res_post``: the residual norm with FCA's own post-processing."""
    z_fca, z_res = robust_z(fca), robust_z(res)
    summed = z_fca + z_res
    weighted = fca * res / float(np.median(res))
    n = len(fca)
    top_fca = fca.reshape(n, -1) >= np.quantile(fca.reshape(n, -1), 0.99, axis=1, keepdims=True)
    res_at_fca_top = (res.reshape(n, -1) * top_fca).sum(1) / top_fca.sum(1)
    return {
        "fca-vae (map max)": (fca, fca.reshape(n, -1).max(1)),
        "residual norm (max)": (res, res.reshape(n, -1).max(1)),
        "residual norm (top 1 %)": (res, top_mean(res)),
        "residual norm, fca's post-processing (max)": (res_post, res_post.reshape(n, -1).max(1)),
        "residual map, fca-vae's score": (res, fca.reshape(n, -1).max(1)),
        "residual map (post-processed), fca-vae's score": (res_post, fca.reshape(n, -1).max(1)),
        "fca map, residual top-1 % score": (fca, top_mean(res)),
        "fca map, residual at fca's top 1 %": (fca, res_at_fca_top),
        "z-sum fca + residual (max)": (summed, summed.reshape(n, -1).max(1)),
        "z-sum fca + residual (top 1 %)": (summed, top_mean(summed)),
        "fca × residual / median (max)": (weighted, weighted.reshape(n, -1).max(1)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer="fca-vae")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    from anomaly_clustering.plugins.blind_lca.torch_model import postprocess

    for s, seed, images, gt, normal, fit in fitted_on_suite(args):
        fca = np.asarray(fit.maps.maps, np.float32)
        res = residual_norms(fit.components["localizer"], images)
        if res.shape != fca.shape:
            res = torch.nn.functional.interpolate(torch.from_numpy(res)[:, None], size=fca.shape[1:], mode="bilinear")[:, 0].numpy()
        params = fit.components["localizer"]._params()
        res_post = np.stack([postprocess(torch.from_numpy(r), params).numpy() for r in res])
        masks = grid_masks(gt, len(images), fca.shape[1:])
        for name, (m, score) in variants(fca, res, res_post).items():
            rows.append(localization_row(s.name, seed, name, m, score, masks, ~normal))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
