"""Can a description of what the anomaly does to the image's structure tell DeepPCB's six types apart? (issue #21)

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/region_descriptor.py --blocks BLOCKS --sets deeppcb [--out rd.json]

DeepPCB's types are missing copper (open, mouse bite, pin hole) or extra copper (short, spur, spurious copper), and
within each polarity they differ by what the change does to the board's connectivity: an open splits a trace, a
short joins two, a pin hole is a hole inside copper, spurious copper an island. Per image, from the native-resolution
grey image and a region, five numbers: the polarity of the anomalous pixels against the structure around them, the
share of bright pixels in a 3-px ring around them, the change in the number of bright and of dark connected
components in the window around them when those pixels are flipped back, and their log area; standardised, one
view. Regions: the ground-truth mask (``oracle``: the anomalous pixels are the mask) or, blind, the peak component
of the default's map (above median + 0.5·(peak − median), bilinear to the image) with the anomalous pixels those
that a 7×7 median filter changes by more than a quarter of the range. Rows per seed: Ward on the descriptor over the
defective images at the number of defect types (oracle, where the set has masks: seed-independent), the default's
crop view alone on them, and the default with the blind descriptor appended to its crop view at weight 0.5 and 1
(all images, the true K). Any set runs; the numbers mean most on two-level images such as DeepPCB's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape_view import peak_component  # noqa: E402  (the map's peak region, as the shape view takes it)
from view_backbone import default_labels  # noqa: E402
from view_harness import fitted_maps, run_saved_views, saved_blocks, saved_views_parser, ward  # noqa: E402


def structure_change(grey: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    """(polarity, bright share of the ring, Δ bright components, Δ dark components, log area) of the ``anomalous``
    pixels of a grey image in [0, 1]; zeros when there are none."""
    if not anomalous.any():
        return np.zeros(5)
    ring = ndimage.binary_dilation(anomalous, iterations=3) & ~anomalous
    ys, xs = np.nonzero(anomalous)
    window = (slice(max(ys.min() - 10, 0), ys.max() + 11), slice(max(xs.min() - 10, 0), xs.max() + 11))
    bright, flip = grey[window] > 0.5, anomalous[window]
    healed = np.where(flip, ~bright, bright)
    count = lambda a: ndimage.label(a)[1]  # noqa: E731
    return np.array([float(grey[anomalous].mean()), float(grey[ring].mean()) if ring.any() else 0.5,
                     count(bright) - count(healed), count(~bright) - count(~healed), np.log(anomalous.sum())])


def blind_anomalous(grey: np.ndarray, grid_map: np.ndarray) -> np.ndarray:
    """The pixels of the map's peak region that a 7×7 median filter changes by more than a quarter of the range
    (the whole region when none does)."""
    from PIL import Image

    m = np.asarray(Image.fromarray(np.asarray(grid_map, np.float32)).resize(grey.shape[::-1], Image.BILINEAR))
    region = peak_component(m)
    changed = region & (np.abs(grey - ndimage.median_filter(grey, size=7)) > 0.25)
    return changed if changed.any() else region


def standardised(raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each column centred and scaled on ``rows``, then the view at unit mean norm."""
    z = (raw - raw[rows].mean(0)) / np.maximum(raw[rows].std(0), 1e-9)
    return z / np.sqrt(z.shape[1])


def main() -> None:
    from PIL import Image
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from anomaly_clustering.data import load_ground_truth

    args = saved_views_parser().parse_args()
    oracle_cache: dict = {}  # the current set's oracle descriptor, computed once per set

    def row_of(images, path, d) -> dict[str, float]:
        true, k = d["true"], int(d["k"])
        greys = [np.asarray(Image.open(p).convert("L"), np.float32) / 255 for p in images.paths]
        gt = load_ground_truth(images)
        good = np.array([lab == "good" for lab in gt.labels])
        if oracle_cache.get("set") != images.root:
            oracle_cache.update(set=images.root, oracle=np.stack([structure_change(g, gt.load_mask(i, g.shape)) for i, g in enumerate(greys)]))
        maps = np.asarray(fitted_maps(images, args.localizer, path, d).maps)
        blind = np.stack([structure_change(g, blind_anomalous(g, maps[i])) for i, g in enumerate(greys)])
        defect, k_defect = ~good, k - 1 if good.any() else k
        oracle_view, blind_view = standardised(oracle_cache["oracle"], defect), standardised(blind, np.ones(len(true), bool))
        blocks = saved_blocks(d)
        row = {"blind descriptor, defects": float(nmi(true[defect], ward(blind_view[defect], k_defect))),
               "crop view, defects": float(nmi(true[defect], ward(blocks["crop224"][defect], k_defect))),
               "default": float(nmi(true, default_labels(blocks, d)))}
        if gt.has_masks:
            row["oracle descriptor, defects"] = float(nmi(true[defect], ward(oracle_view[defect], k_defect)))
        for w in (0.5, 1.0):
            crop = np.concatenate([blocks["crop224"], w * blind_view], 1)
            row[f"default + blind descriptor x{w}"] = float(nmi(true, default_labels({**blocks, "crop224": crop}, d)))
        return row

    run_saved_views(args, row_of, width=34)


if __name__ == "__main__":
    main()
