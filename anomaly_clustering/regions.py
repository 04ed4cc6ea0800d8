"""Connected regions of binary masks (8-connected, SciPy) and Otsu's threshold, shared by every binarizer."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .records import Region

__all__ = ["masks_to_regions", "otsu_threshold", "EIGHT_CONNECTED"]

EIGHT_CONNECTED = np.ones((3, 3), bool)


def masks_to_regions(masks: np.ndarray, maps: np.ndarray, min_area: int = 1) -> tuple[np.ndarray, tuple[Region, ...]]:
    """Label each mask's 8-connected components; drop those smaller than ``min_area`` pixels (also from the mask).
    Returns the cleaned masks and one :class:`Region` per kept component (box end-exclusive, score = max map)."""
    masks = np.array(masks, dtype=bool, copy=True)
    out: list[Region] = []
    for i in range(masks.shape[0]):
        if not masks[i].any():
            continue
        labels, n = ndimage.label(masks[i], structure=EIGHT_CONNECTED)
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        areas = ndimage.sum_labels(np.ones_like(labels), labels, idx).astype(int)
        peaks = ndimage.maximum(np.asarray(maps[i], np.float32), labels, idx)
        small = idx[areas < min_area]
        if len(small):
            masks[i][np.isin(labels, small)] = False
        for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None or areas[lab - 1] < min_area:
                continue
            ys, xs = sl
            out.append(Region(i, (int(xs.start), int(ys.start), int(xs.stop), int(ys.stop)), int(areas[lab - 1]), float(peaks[lab - 1])))
    return masks, tuple(out)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold maximising the between-class variance of ``values`` (vectorised over all bins)."""
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between)) + 1])
