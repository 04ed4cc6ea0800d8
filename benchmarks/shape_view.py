"""Does the anomaly's shape help tell defect types apart? A small "shape" view beside the default's views.

    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/classifier_ablation.py --localizer fca-vae --seeds 0,1,2 --save_blocks BLOCKS
    ANOMALY_CLUSTERING_CACHE=CACHE python benchmarks/shape_view.py --blocks BLOCKS --localizer fca-vae [--out shape.json]

Per image, from the anomaly map's peak region (the component of :func:`anomaly_boxes`, defined for every image) and
the image at map resolution: log area share, log elongation (ratio of the principal axes), fill of its bounding box,
polarity (mean grey inside minus the ring around it, over the image's grey spread), contrast inside, and the log
image score; each feature standardised over the set. Broken-large against broken-small, missing copper against
extra copper, a crack against a blowhole are differences of size, shape and polarity that pooled deep features
average away. Per set × seed: the default (`multiview-all-normal-first`) against the default with the shape view
at weight 1 and 0.5, Ward on `multiview-all` + shape, and the shape view alone. The maps come from the stage cache
the first command filled (the same fit configuration), so the views saved there line up image for image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normal_first_rule import descriptor  # noqa: E402
from view_harness import (  # noqa: E402
    fitted_maps, normal_first_nmi, region_info, run_saved_views, saved_blocks, saved_views_parser, standardise, ward,
)


def peak_component(m: np.ndarray, level: float = 0.5) -> np.ndarray:
    """The connected component containing the map's peak of the pixels above median + level·(peak − median)."""
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    med = float(np.median(m))
    labels, _ = ndimage.label(m >= med + level * (float(m[peak]) - med))
    return labels == labels[peak]


def shape_features(maps: np.ndarray, scores: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """N×6 raw shape features (see the module docstring); ``grey`` N×H×W at the maps' resolution."""
    n, h, w = maps.shape
    out = np.zeros((n, 6))
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        comp = peak_component(np.asarray(maps[i], np.float64))
        area = int(comp.sum())
        ys, xs = yy[comp].astype(np.float64), xx[comp].astype(np.float64)
        cov = np.cov(np.stack([ys, xs])) if area > 1 else np.eye(2) * 0.25
        ev = np.clip(np.linalg.eigvalsh(np.atleast_2d(cov) + np.eye(2) * 1e-3), 1e-3, None)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        ring = ndimage.binary_dilation(comp, iterations=2) & ~comp
        g = grey[i]
        spread = float(g.std()) + 1e-6
        inside = float(g[comp].mean())
        around = float(g[ring].mean()) if ring.any() else float(g.mean())
        out[i] = (np.log(area / (h * w)), 0.5 * np.log(ev[-1] / ev[0]), area / box, (inside - around) / spread,
                  float(g[comp].std()) / spread if area > 1 else 0.0, np.log(max(float(scores[i]), 1e-12)))
    return out


def grey_at(images, size: tuple[int, int]) -> np.ndarray:
    from anomaly_clustering.data import load_resized

    return np.stack([load_resized(Path(images.root) / name, size).astype(np.float64).mean(2) for name in images.names])


def main() -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    args = saved_views_parser().parse_args()

    def row_of(images, path, d) -> dict[str, float]:
        true, k = d["true"], int(d["k"])
        maps = fitted_maps(images, args.localizer, path, d)
        m = np.asarray(maps.maps)
        raw = shape_features(m, np.asarray(maps.scores), grey_at(images, m.shape[1:]))
        shape = standardise((raw - raw.mean(0)) / np.maximum(raw.std(0), 1e-9))
        has_region, _ = region_info(d)
        base = descriptor(saved_blocks(d), has_region).astype(np.float64)
        return {"default": normal_first_nmi(base, d),
                "default + shape": normal_first_nmi(np.concatenate([base, shape], 1), d),
                "default + shape x0.5": normal_first_nmi(np.concatenate([base, 0.5 * shape], 1), d),
                "ward(multiview-all + shape)": float(nmi(true, ward(np.concatenate([base, shape], 1), k))),
                "ward(multiview-all)": float(nmi(true, ward(base, k))),
                "shape alone": float(nmi(true, ward(shape, k)))}

    run_saved_views(args, row_of, width=30)


if __name__ == "__main__":
    main()
