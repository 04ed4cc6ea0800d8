"""What FCA's zeroed border costs, and how to see the border without its artefacts (issue #19).

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/fca_border.py --sets mtd deeppcb mvtec_bottle neu_det --seeds 0,1,2 [--out fb.json]

Blind-LCA (following its [5]) zeroes a 5-cell frame of every FCA map (at 512 px, 64×64: only the central 54×54, 71 %
of the image, is scored) because within-image scores are unreliable near the edges: the frame is rare *inside* an
image. On MTD 31 % of the defect pixels lie in that frame and 72 of the 386 defective tiles have their defect only
there. The frame is, however, the same in every image of the set, so across-set evidence can tell an artefact from
a defect: per position, the map less the set's median at that position (and optionally divided by the set's MAD
there). Measured on the fitted ``fca-vae`` of the stage cache (FCA re-run on the VAE's residuals, no new training):
borders 5 (the paper's, = the localizer's maps), 2 and 0, each as is and calibrated per position; at border 0 also
two narrower calibrations: only the frame less its position median, and each map less the median of its most
similar maps (one median per board layout); and border 0 with the image score taken outside the paper's 5-cell frame
(``fca-vae-frame``: the map keeps the frame, the ranking does not). Prints PRO@0.3, pixel and image AUROC (max,
unless the variant says otherwise) at the feature grid per set, seed and variant.
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
from view_harness import add_suite_arguments, fitted_on_suite, grid_masks, localization_row  # noqa: E402  (benchmarks/ is the script folder)


def raw_fca_maps(localizer, images) -> np.ndarray:
    """N×h×w FCA maps of the fitted localizer's input (the VAE's residuals for ``fca-vae``) before post-processing."""
    from anomaly_clustering.backbones import extract_features
    from anomaly_clustering.features_ops import scale_per_instance
    from anomaly_clustering.plugins.blind_lca.torch_model import fca_map

    feats = extract_features(images, localizer._spec())
    params = localizer._params()
    with torch.no_grad():
        return np.stack([fca_map(localizer._fca_input(scale_per_instance(feats[i][None].float()))[0], params, postprocess_map=False).numpy()
                         for i in range(len(images))])


def with_border(raw: np.ndarray, params, border: int) -> np.ndarray:
    """FCA's post-processing (blur σ = post_sigma) with a ``border``-cell frame zeroed."""
    from anomaly_clustering.plugins.blind_lca.torch_model import FCAParams, postprocess

    p = FCAParams(params.patch_size, params.sigma_p, params.sigma_s, params.post_sigma, border, params.chunk_elements)
    return np.stack([postprocess(torch.from_numpy(m), p).numpy() for m in raw])


def per_position(maps: np.ndarray, divide: bool) -> np.ndarray:
    """Each position less the set's median there (÷ the set's MAD there with ``divide``): what every image has at
    one place — the frame's artefacts — is not an anomaly."""
    med = np.median(maps, axis=0, keepdims=True)
    out = maps - med
    if divide:
        mad = np.median(np.abs(out), axis=0, keepdims=True)
        out = out / np.maximum(mad, 1e-6 * max(1e-12, float(np.median(mad))))
    return out


def frame_median(maps: np.ndarray, frame: int) -> np.ndarray:
    """Only the ``frame`` outer cells less the set's median there; the interior less one number (the median of its
    per-position medians), so its ranking is FCA's own and the frame meets it on the same level."""
    med = np.median(maps, axis=0)
    inner = np.zeros(med.shape, bool)
    inner[frame:-frame, frame:-frame] = True
    med[inner] = np.median(med[inner])
    return maps - med[None]


def neighbour_median(maps: np.ndarray, k: int, grid: int = 16) -> np.ndarray:
    """Each map less the per-position median of the ``k`` most similar other maps (L2 between the maps pooled to
    ``grid``×``grid`` and standardised): one median per layout instead of one per set."""
    n, h, w = maps.shape
    small = maps.reshape(n, grid, h // grid, grid, w // grid).mean((2, 4)).reshape(n, -1)
    small = (small - small.mean(1, keepdims=True)) / (small.std(1, keepdims=True) + 1e-8)
    dist = -small @ small.T  # standardised rows: squared L2 = 2·(cells − dot), one matrix product, no N×N×cells array
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, 1)[:, :k]
    return np.stack([maps[i] - np.median(maps[nearest[i]], 0) for i in range(n)])


def variants(raw: np.ndarray, params, borders: list[int]) -> dict[str, np.ndarray]:
    """Every variant's maps: each border as is, less the position median, as a position z-score; at border 0 also
    the frame-only and nearest-maps calibrations."""
    out = {}
    for b in borders:
        m = with_border(raw, params, b)
        out[f"border {b}"] = m
        out[f"border {b}, less the position median"] = per_position(m, False)
        out[f"border {b}, position z-score"] = per_position(m, True)
        if b == 0:
            for frame in (5, 8):
                out[f"border 0, frame {frame} only less the position median"] = frame_median(m, frame)
            for k in (8, 32):
                out[f"border 0, less the median of the {k} most similar maps"] = neighbour_median(m, k)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    add_suite_arguments(ap, localizer="fca-vae")
    ap.add_argument("--borders", default="5,2,0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for s, seed, images, gt, normal, fit in fitted_on_suite(args):
        loc = fit.components["localizer"]
        start = time.perf_counter()
        raw = raw_fca_maps(loc, images)
        seconds = (time.perf_counter() - start) / len(images)
        print(f"{s.name} seed {seed}: raw FCA maps, {seconds:.3f} s / image", flush=True)
        masks = grid_masks(gt, len(images), raw.shape[1:])
        maps = variants(raw, loc._params(), [int(v) for v in args.borders.split(",")])
        for name, m in maps.items():
            rows.append(localization_row(s.name, seed, name, m, m.reshape(len(m), -1).max(1), masks, ~normal, fca_s_per_image=seconds))
        if "border 0" in maps:
            from anomaly_clustering.plugins.blind_lca.localizer import FCAVAEFrameLocalizer

            m = maps["border 0"]
            rows.append(localization_row(s.name, seed, "border 0, image score outside the 5-cell frame", m,
                                         FCAVAEFrameLocalizer()._image_scores(m), masks, ~normal, fca_s_per_image=seconds))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
