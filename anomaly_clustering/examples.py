"""A generated example set in MVTec AD layout: a stationary texture (or an object on a plain background) with three
planted defect kinds.

``test/<type>/<n>.png`` plus ``ground_truth/<type>/<n>_mask.png``, so ``fit``, ``evaluate`` and ``report`` can all
run on it without any download. Defect kinds differ in shape and appearance: ``scratch`` (thin bright line),
``hole`` (dark round pit) and ``stain`` (soft tinted blotch); ``good`` images have none. ``kind="object"`` draws a
shaded disc whose position, size and shade vary from image to image on a plain background, with the defects inside
it: every image has the object's outline, so a localizer that lights up outlines, or a descriptor that follows
position, cannot separate the types there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["make_texture", "make_object", "plant_defect", "make_example_set", "DEFECT_KINDS", "EXAMPLE_KINDS"]

DEFECT_KINDS = ("scratch", "hole", "stain")
EXAMPLE_KINDS = ("texture", "object")


def make_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A woven-looking grey-brown texture (H×W×3 float in [0, 1]): oriented stripes plus smoothed noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = 0.5 + 0.25 * np.sin(2 * np.pi * xx / 8 + phase[0]) * np.sin(2 * np.pi * yy / 8 + phase[1])
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5)
    base = np.clip(weave + 0.08 * noise / (noise.std() + 1e-6), 0, 1)
    tint = np.array([0.75, 0.65, 0.5]) + rng.normal(0, 0.02, 3)
    return np.clip(base[..., None] * tint[None, None, :] + 0.15, 0, 1)


def make_object(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A shaded disc with a rim on a plain background (H×W×3 float in [0, 1]); its centre, radius and shade vary.
    Returns the image and (centre y, centre x, radius) in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    radius = size * rng.uniform(0.33, 0.37)
    d = np.hypot(yy - cy, xx - cx) / radius
    body = 0.55 + rng.uniform(-0.06, 0.06) - 0.15 * d**2 + 0.02 * ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 2)
    body = np.where(np.abs(d - 0.92) < 0.04, body + 0.2, body)  # a bright rim, as on a cap or a bottle's mouth
    background = 0.12 + 0.03 * yy / size + rng.uniform(-0.02, 0.02)
    grey = np.where(d < 1.0, body, background)
    tint = np.array([0.85, 0.9, 1.0]) + rng.normal(0, 0.02, 3)
    return np.clip(grey[..., None] * tint[None, None, :], 0, 1), (float(cy), float(cx), float(radius))


def plant_defect(img: np.ndarray, kind: str, rng: np.random.Generator, within: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Plant one defect of ``kind``; returns the image and its binary mask. ``within``: (centre y, centre x, radius)
    of a disc the defect's centre must fall in (an object's face); default the image's central half."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if within is None:
        cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
    else:
        angle, dist = rng.uniform(0, 2 * np.pi), within[2] * 0.55 * np.sqrt(rng.uniform())
        cy, cx = within[0] + dist * np.sin(angle), within[1] + dist * np.cos(angle)
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


def make_example_set(folder: str | Path, per_kind: int = 12, n_good: int = 12, size: int = 256, seed: int = 0, kind: str = "texture") -> Path:
    """Write the example set under ``folder`` (MVTec layout) and return its ``test`` folder; ``kind``: ``texture``
    (a woven texture) or ``object`` (a disc on a plain background, defects on its face)."""
    if kind not in EXAMPLE_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(EXAMPLE_KINDS)}")
    rng = np.random.default_rng(seed)
    root = Path(folder)
    for defect in ("good", *DEFECT_KINDS):
        (root / "test" / defect).mkdir(parents=True, exist_ok=True)
        if defect != "good":
            (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        for i in range(n_good if defect == "good" else per_kind):
            img, face = make_object(rng, size) if kind == "object" else (make_texture(rng, size), None)
            if defect != "good":
                img, mask = plant_defect(img, defect, rng, within=face)
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ground_truth" / defect / f"{i:03d}_mask.png")
            Image.fromarray((img * 255).astype(np.uint8)).save(root / "test" / defect / f"{i:03d}.png")
    return root / "test"
