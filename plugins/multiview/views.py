"""The views a multi-view descriptor is built from: pooled deep-stage statistics of whole images and of full-resolution
crops around each image's most anomalous region. Pure functions of images and maps (no learned state), cached on disk
per view, so that every seed and every classifier built on them reads them once."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from anomaly_clustering import runtime
from anomaly_clustering.backbones import FeatureSpec, extract_features, get_backbone
from anomaly_clustering.data import load_image, load_resized
from anomaly_clustering.records import ImageSet
from anomaly_clustering.store import StageCache, stable_hash

__all__ = ["pooled_statistics", "anomaly_boxes", "crop_batch", "view_vectors", "VIEW_KINDS"]

VIEW_KINDS = ("average", "context", "crop")
VIEW_FILE = "vectors.npy"


def pooled_statistics(maps: Sequence[torch.Tensor], stats: Sequence[str] = ("mean", "std")) -> torch.Tensor:
    """B×D: per stage map, the spatial mean and/or standard deviation of every channel (second-order statistics
    describe a texture's kind where the mean alone blurs it), concatenated over stages."""
    out = []
    for m in maps:
        flat = m.flatten(2).float()
        for s in stats:
            if s == "mean":
                out.append(flat.mean(2))
            elif s == "std":
                out.append(flat.std(2, unbiased=False))
            elif s == "max":
                out.append(flat.amax(2))
            else:
                raise ValueError(f"pooled statistic {s!r}: choose mean, std or max")
    return torch.cat(out, dim=1)


def anomaly_boxes(maps: np.ndarray, image_sizes: np.ndarray, level: float = 0.5, margin: float = 0.25, min_side: float = 0.25) -> np.ndarray:
    """N×4 square boxes (x0, y0, x1, y1) in each image's own pixels around its most anomalous region: the connected
    component, containing the map's peak, of the pixels above ``median + level·(peak − median)``; its bounding box
    widened by ``margin`` on each side and to at least ``min_side`` of the shorter image side, shifted inside the image."""
    n, h, w = maps.shape
    boxes = np.zeros((n, 4), np.int64)
    for i in range(n):
        m = np.asarray(maps[i], np.float32)
        peak = np.unravel_index(int(np.argmax(m)), m.shape)
        med = float(np.median(m))
        labels, _ = ndimage.label(m >= med + level * (float(m[peak]) - med))
        ys, xs = np.nonzero(labels == labels[peak])
        ih, iw = (int(v) for v in image_sizes[i])
        sy, sx = ih / h, iw / w
        y0, y1, x0, x1 = ys.min() * sy, (ys.max() + 1) * sy, xs.min() * sx, (xs.max() + 1) * sx
        side = max(y1 - y0, x1 - x0) * (1.0 + 2.0 * margin)
        side = int(round(min(max(side, min_side * min(ih, iw)), min(ih, iw))))
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
        top = int(round(min(max(cy - side / 2.0, 0), ih - side)))
        left = int(round(min(max(cx - side / 2.0, 0), iw - side)))
        boxes[i] = (left, top, left + side, top + side)
    return boxes


def crop_batch(paths: Sequence[str], boxes: np.ndarray, size: int) -> torch.Tensor:
    """B×3×size×size float crops in [0, 1], each cut from the image at its own resolution, then resized."""
    out = []
    for path, (x0, y0, x1, y1) in zip(paths, boxes):
        img = Image.fromarray(load_image(path)).crop((int(x0), int(y0), int(x1), int(y1)))
        out.append(np.asarray(img.resize((size, size), Image.BILINEAR), np.uint8))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)


def _whole_batch(paths: Sequence[str], size: int) -> torch.Tensor:
    arr = np.stack([load_resized(p, size) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def view_vectors(
    images: ImageSet,
    kind: str,
    spec: FeatureSpec,
    stats: Sequence[str],
    boxes: np.ndarray | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """N×D pooled statistics of one view (``average``: the mean of the shared backbone features, Sohn et al.'s
    Average; ``context``: whole images at ``spec.input_size``; ``crop``: the ``boxes`` cut at full resolution,
    resized to ``spec.input_size``), cached in the stage cache folder by content."""
    if kind not in VIEW_KINDS:
        raise ValueError(f"view {kind!r}: choose one of {', '.join(VIEW_KINDS)}")
    if kind == "average":  # Sohn et al.'s Average: the shared (cached) backbone features, mean-pooled
        feats = extract_features(images, spec)
        return np.concatenate([np.asarray(feats.data[s : s + 64], np.float32).mean(axis=(2, 3)) for s in range(0, len(images), 64)])
    key = stable_hash("multiview", kind, spec.backbone, spec.resolved_layers(), spec.input_size, spec.weights, list(stats),
                      None if boxes is None else np.asarray(boxes).tolist(), images.fingerprint())
    cache = StageCache(runtime.cache_dir())
    cached = _cached_view(cache, key, len(images))
    if cached is not None:
        return cached
    backbone = get_backbone(spec).to(runtime.device())
    paths = images.paths
    rows = []
    starts = range(0, len(images), batch_size)
    for s in runtime.progress(starts, desc=f"{kind} view", total=len(starts), unit="batch"):
        sl = slice(s, s + batch_size)
        x = _whole_batch(paths[sl], spec.input_size) if kind == "context" else crop_batch(paths[sl], boxes[sl], spec.input_size)
        rows.append(pooled_statistics(backbone.forward_layers(x.to(runtime.device())), stats).cpu().numpy())
    out = np.concatenate(rows).astype(np.float32)
    with cache.entry("multiview", key) as folder:
        np.save(folder / VIEW_FILE, out, allow_pickle=False)
    return out


def _cached_view(cache: StageCache, key: str, n_images: int) -> np.ndarray | None:
    """The cached view if its entry is complete, its checksums match and it holds one finite row per image; a
    damaged entry is removed (by :meth:`StageCache.lookup`) or ignored, so the view is recomputed."""
    folder = cache.lookup("multiview", key)
    if folder is None:
        return None
    try:
        out = np.load(folder / VIEW_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if out.ndim != 2 or len(out) != n_images or not np.isfinite(out).all():
        return None
    return out
