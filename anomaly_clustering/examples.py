"""A generated example set in MVTec AD layout: a stationary texture with three planted defect kinds.

``test/<type>/<n>.png`` plus ``ground_truth/<type>/<n>_mask.png``, so ``fit``, ``evaluate`` and ``report`` can all
run on it without any download. Defect kinds differ in shape and appearance: ``scratch`` (thin bright line),
``hole`` (dark round pit) and ``stain`` (soft tinted blotch); ``good`` images have none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["make_texture", "plant_defect", "make_example_set", "DEFECT_KINDS"]

DEFECT_KINDS = ("scratch", "hole", "stain")


def make_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A woven-looking grey-brown texture (H×W×3 float in [0, 1]): oriented stripes plus smoothed noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = 0.5 + 0.25 * np.sin(2 * np.pi * xx / 8 + phase[0]) * np.sin(2 * np.pi * yy / 8 + phase[1])
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5)
    base = np.clip(weave + 0.08 * noise / (noise.std() + 1e-6), 0, 1)
    tint = np.array([0.75, 0.65, 0.5]) + rng.normal(0, 0.02, 3)
    return np.clip(base[..., None] * tint[None, None, :] + 0.15, 0, 1)


def plant_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Plant one defect of ``kind``; returns the image and its binary mask."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
    out = img.copy()
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.25, 0.4) * size
        d_perp = np.abs(-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle))
        d_par = np.abs((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle))
        mask = (d_perp < 1.6) & (d_par < length / 2)
        out[mask] = np.clip(out[mask] + 0.45, 0, 1)
    elif kind == "hole":
        r = rng.uniform(0.04, 0.07) * size
        d = np.hypot(yy - cy, xx - cx)
        mask = d < r
        shade = np.clip(1 - d / r, 0, 1)[..., None] * 0.25 + 0.05
        out = np.where(mask[..., None], shade, out)
    elif kind == "stain":
        r = rng.uniform(0.1, 0.16) * size
        field = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 6)
        d = np.hypot(yy - cy, xx - cx) / r + 0.6 * field / (np.abs(field).max() + 1e-6)
        mask = d < 1.0
        tint = np.array([0.35, 0.1, -0.15])
        out[mask] = np.clip(out[mask] * 0.8 + tint, 0, 1)
    else:
        raise ValueError(f"unknown defect kind {kind!r}; choose from {DEFECT_KINDS}")
    return out, mask


def make_example_set(folder: str | Path, per_kind: int = 12, n_good: int = 12, size: int = 256, seed: int = 0) -> Path:
    """Write the example set under ``folder`` (MVTec layout) and return its ``test`` folder."""
    rng = np.random.default_rng(seed)
    root = Path(folder)
    for kind in ("good", *DEFECT_KINDS):
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        if kind != "good":
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_good if kind == "good" else per_kind):
            img = make_texture(rng, size)
            if kind != "good":
                img, mask = plant_defect(img, kind, rng)
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ground_truth" / kind / f"{i:03d}_mask.png")
            Image.fromarray((img * 255).astype(np.uint8)).save(root / "test" / kind / f"{i:03d}.png")
    return root / "test"
