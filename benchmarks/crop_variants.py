"""Which description of the anomaly crop carries its type? Variants of the default's crop view, on the saved views.

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/crop_variants.py --blocks BLOCKS [--variants ...] [--out crop.json]

The default (`multiview-all-normal-first`) describes an image's anomaly by the mean and standard deviation of Lite0's
stride-16 and stride-32 channels over a square cut around the map's peak region at the image's own resolution. With
ground-truth masks that crop alone clusters MTD at 0.38 and DeepPCB at 0.43 NMI; most of the square is normal
surroundings, which the pooled statistics average in. Each variant replaces the crop view (every other view as
saved) and is scored by the default's clusterer and by Ward on the crop alone:

- ``plain``: the default's crop recomputed (a check that the harness reproduces the saved view);
- ``deeper``: stages 2 + 3 + 4 (strides 8, 16, 32): finer shape channels beside the default's;
- ``max``: mean, std and max per channel (the strongest response is the defect's, not its surroundings');
- ``tight`` / ``wide``: the square at least 1/8 / 1/2 of the image side (default 1/4);
- ``weighted``: mean and std weighted by the anomaly map inside the square (the map's excess over its median),
  beside the plain mean: the defect's own channels;
- ``weighted-only``: the map-weighted mean and std alone;
- ``d4``: the default's statistics averaged over the crop's eight rotations and flips (a defect's type does not
  depend on which way it points; a board's traces and a tile's cracks run every way);
- ``residual``: each patch of the crop less its nearest patch in the crops of the images without a region (what the
  patch would look like without the defect), pooled by the residuals' length-weighted mean and std
  (``crop_residual.py``); ``residual-features``: the same with the weighted mean of the patches' own features beside.

The maps come from the stage cache the first command filled (the same fit configuration), so the views line up
image for image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_backbone import default_nmi  # noqa: E402
from view_harness import (  # noqa: E402
    fitted_maps, region_info, run_saved_views, saved_blocks, saved_views_parser, standardise, ward,
)

VARIANTS = ("plain", "deeper", "max", "tight", "wide", "weighted", "weighted-only", "d4", "residual", "residual-features")


@torch.no_grad()
def weighted_crop_vectors(images, maps: np.ndarray, image_sizes: np.ndarray, boxes: np.ndarray, spec, with_plain: bool,
                          batch: int = 16) -> np.ndarray:
    """Per image, each stage's channel mean and std weighted by the map's excess over its median inside the box,
    and (``with_plain``) the plain channel mean beside them."""
    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import get_backbone
    from anomaly_clustering.plugins.multiview.views import crop_batch

    backbone = get_backbone(spec).to(runtime.device())
    n, h, w = maps.shape
    rows = []
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        x = crop_batch(images.paths[sl], boxes[sl], spec.input_size)
        stages = backbone.forward_layers(x.to(runtime.device()))
        weights = []
        for i, (x0, y0, x1, y1) in zip(range(s, min(s + batch, n)), boxes[sl]):
            ih, iw = (int(v) for v in image_sizes[i])
            m = maps[i]
            ya, yb = int(np.floor(y0 * h / ih)), max(int(np.ceil(y1 * h / ih)), int(np.floor(y0 * h / ih)) + 1)
            xa, xb = int(np.floor(x0 * w / iw)), max(int(np.ceil(x1 * w / iw)), int(np.floor(x0 * w / iw)) + 1)
            weights.append(np.clip(m[ya:yb, xa:xb] - np.median(m), 0.0, None))
        out = []
        for st in stages:
            sh, sw = st.shape[-2:]
            wmap = torch.stack([F.interpolate(torch.from_numpy(np.ascontiguousarray(wt, np.float32))[None, None], (sh, sw),
                                              mode="bilinear", align_corners=False)[0, 0] for wt in weights])
            wmap = wmap + 1e-6
            wmap = (wmap / wmap.sum((1, 2), keepdim=True)).to(st.device)[:, None]
            f = st.float()
            mean = (f * wmap).sum((2, 3))
            std = ((f - mean[..., None, None]) ** 2 * wmap).sum((2, 3)).clamp_min(0).sqrt()
            out += [mean, std] + ([f.mean((2, 3))] if with_plain else [])
        rows.append(torch.cat(out, 1).cpu().numpy())
    return np.concatenate(rows).astype(np.float32)


def crop_block(variant: str, images, maps, has_region: np.ndarray | None = None) -> np.ndarray:
    """The crop view of one variant (raw vectors, before standardisation); ``has_region`` (the saved verdict) picks
    the ``residual`` variants' reference images."""
    from anomaly_clustering.backbones import FeatureSpec
    from anomaly_clustering.plugins.multiview.views import anomaly_boxes, view_vectors

    m, sizes = np.asarray(maps.maps), np.asarray(maps.image_sizes)
    layers = ("2", "3", "4") if variant == "deeper" else ("3", "4")
    spec = FeatureSpec("tf_efficientnet_lite0", layers, 224, None)
    min_side = {"tight": 0.125, "wide": 0.5}.get(variant, 0.25)
    boxes = anomaly_boxes(m, sizes, 0.5, 0.25, min_side)
    if variant == "d4":
        from crop_invariance import d4_crop_view

        return d4_crop_view(images, boxes, spec.input_size)
    if variant in ("residual", "residual-features"):
        from crop_residual import residual_crop_view

        if has_region is None:
            raise ValueError(f"crop variant {variant!r} needs has_region (the saved verdict) to pick its reference images")
        return residual_crop_view(images, boxes, np.asarray(has_region, bool), spec, with_features=variant == "residual-features")
    if variant in ("weighted", "weighted-only"):
        return weighted_crop_vectors(images, m, sizes, boxes, spec, with_plain=variant == "weighted")
    stats = ("mean", "std", "max") if variant == "max" else ("mean", "std")
    return view_vectors(images, "crop", spec, stats, boxes)


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    ap = saved_views_parser()
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args()

    def row_of(images, path, d) -> dict[str, float]:
        true, k = d["true"], int(d["k"])
        maps = fitted_maps(images, args.localizer, path, d)
        blocks = saved_blocks(d)
        row = {"default": default_nmi(blocks, d), "crop alone": float(nmi(true, ward(blocks["crop224"], k)))}
        for v in args.variants:
            crop = standardise(crop_block(v, images, maps, region_info(d)[0]))
            row[v] = default_nmi({**blocks, "crop224": crop}, d)
            row[f"{v} alone"] = float(nmi(true, ward(crop, k)))
        return row

    run_saved_views(args, row_of)


if __name__ == "__main__":
    main()
