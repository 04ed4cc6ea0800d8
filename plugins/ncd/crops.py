"""Anomaly-centred sub-image boxes (AnomalyNCD §III-B, details from the authors' public reference code), from any binarizer's output.

Per connected region: a square box centred on its bounding box, side = max(1.1 × longer side, 0.2 × longer map
side), at most the map size, shifted inside the map. Boxes closer than 1 % of the map size are merged (union,
re-squared) until none are. Boxes sorted by area, at most (estimated count + 1) kept; an image without regions gets
the whole map as its single crop. Boxes are in map coordinates; :func:`crop_images` scales them to the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from anomaly_clustering.backbones import load_batch
from anomaly_clustering.records import AnomalyMaps, ImageSet, Regions

__all__ = ["CropBox", "square_box", "merge_boxes", "crop_boxes", "crop_images"]


@dataclass(frozen=True)
class CropBox:
    """One sub-image: its image, box (x0, y0, x1, y1) in map pixels (end-exclusive), the mask inside the box, its
    max anomaly value normalised to 0–1 over the set's range, and the mask's pixel count (its anomaly area)."""

    image_index: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float
    area: int
    whole_image: bool = False


def square_box(box: tuple[int, int, int, int], height: int, width: int, min_side: float, pad: float = 1.1) -> tuple[int, int, int, int]:
    """The square around ``box``'s centre with side max(pad × longer side, min_side), capped at the map size and
    shifted to lie inside the map."""
    x0, y0, x1, y1 = box
    side = int(round(max(pad * max(x1 - x0, y1 - y0), min_side)))
    side = max(1, min(side, height, width))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    nx0 = int(round(cx - side / 2))
    ny0 = int(round(cy - side / 2))
    nx0 = min(max(nx0, 0), width - side)
    ny0 = min(max(ny0, 0), height - side)
    return nx0, ny0, nx0 + side, ny0 + side


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Distance between two boxes (0 when they touch or overlap)."""
    dx = max(b[0] - a[2], a[0] - b[2], 0)
    dy = max(b[1] - a[3], a[1] - b[3], 0)
    return float(np.hypot(dx, dy))


def merge_boxes(boxes: list[tuple[int, int, int, int]], height: int, width: int, distance: float) -> list[tuple[int, int, int, int]]:
    """Merge boxes closer than ``distance`` (union, re-squared inside the map) until no two are that close."""
    boxes = list(boxes)
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _gap(boxes[i], boxes[j]) < distance:
                    a, b = boxes[i], boxes[j]
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    boxes[i] = square_box(union, height, width, 0.0, pad=1.0)
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def crop_boxes(regions: Regions, maps: AnomalyMaps, counts: np.ndarray | None = None, pad: float = 1.1,
               min_fraction: float = 0.2, merge_fraction: float = 0.01) -> list[CropBox]:
    """The crops of every image, in image order. ``counts``: the estimated anomaly count per image (MEBin's
    ``Regions.info["counts"]``; by default the number of regions), which caps the crops at count + 1."""
    n = len(regions)
    h, w = regions.masks.shape[1:]
    if counts is None:
        counts = regions.info.get("counts")
    if counts is None:
        counts = np.bincount([r.image_index for r in regions.regions], minlength=n)
    counts = np.asarray(counts, np.int64)
    peaks = np.asarray(maps.maps, np.float32).reshape(len(maps), -1).max(1)
    lo, hi = float(peaks.min()), float(peaks.max())
    span = max(hi - lo, 1e-12)
    by_image: list[list] = [[] for _ in range(n)]
    for r in regions.regions:
        by_image[r.image_index].append(r)
    out: list[CropBox] = []
    for i in range(n):
        mask = np.asarray(regions.masks[i], bool)
        amap = np.asarray(maps.maps[i], np.float32)
        if not by_image[i]:
            out.append(CropBox(i, (0, 0, w, h), mask.copy(), float(np.clip((amap.max() - lo) / span, 0, 1)), int(mask.sum()), True))
            continue
        boxes = [square_box(r.box, h, w, min_fraction * max(h, w), pad) for r in by_image[i]]
        boxes = merge_boxes(boxes, h, w, merge_fraction * max(h, w))
        boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        for x0, y0, x1, y1 in boxes[: int(counts[i]) + 1]:
            m = mask[y0:y1, x0:x1].copy()
            score = float(np.clip((amap[y0:y1, x0:x1].max() - lo) / span, 0, 1))
            out.append(CropBox(i, (x0, y0, x1, y1), m, score, int(m.sum())))
    return out


def crop_images(images: ImageSet, crops: list[CropBox], map_size: tuple[int, int], size: int, source_size: int = 512,
                batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Each crop's image patch and mask, resized to size×size: (M×3×size×size in [0, 1], M×1×size×size in [0, 1]).
    Images are read squashed to source_size² (the maps' frame: a square resize of the image), and boxes scaled to
    it. An empty mask (a whole-image crop without regions) becomes all ones, so the class token sees everything."""
    mh, mw = map_size
    patches = torch.empty(len(crops), 3, size, size)
    masks = torch.empty(len(crops), 1, size, size)
    order = sorted(range(len(crops)), key=lambda k: crops[k].image_index)
    needed = sorted({c.image_index for c in crops})
    for s in range(0, len(needed), batch_size):
        idx = needed[s : s + batch_size]
        batch = dict(zip(idx, load_batch(images, idx, source_size)))
        for k in order:
            c = crops[k]
            if c.image_index not in batch:
                continue
            x0, y0, x1, y1 = c.box
            sx, sy = source_size / mw, source_size / mh
            X0, Y0 = int(round(x0 * sx)), int(round(y0 * sy))
            X1, Y1 = max(int(round(x1 * sx)), X0 + 1), max(int(round(y1 * sy)), Y0 + 1)
            patch = batch[c.image_index][:, Y0:Y1, X0:X1]
            patches[k] = F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
            m = torch.from_numpy(c.mask.astype(np.float32))
            if not c.mask.any():
                m = torch.ones_like(m)
            masks[k] = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return patches, masks
