"""``benchmarks/object_composite.py``: a texture image becomes an object on a plain background — the defect moves and
is cut with the texture, a defect the ellipse cuts away is reported as lost, the background is plain."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from object_composite import BACKGROUND, composite  # noqa: E402


def _tile(defect: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((100, 100, 3), 0.3, np.float32)
    mask = np.zeros((100, 100), bool)
    mask[defect] = True
    image[mask] = 1.0
    return image, mask


def test_a_central_defect_moves_with_the_texture_and_stays_whole() -> None:
    image, mask = _tile((slice(45, 55), slice(45, 55)))
    obj, moved, rim, kept = composite(image, mask, 160, np.random.default_rng(0))
    assert obj.shape == (160, 160, 3) and moved.shape == rim.shape == (160, 160)
    assert kept > 0.9 and moved.any()
    assert obj[moved].mean() > 0.9  # the defect's pixels are where its mask went
    texture = (np.abs(obj - 0.3) < 0.05).all(-1)
    background = (np.abs(obj - BACKGROUND) < 0.05).all(-1)
    assert texture.sum() > 0.2 * texture.size and background.sum() > 0.2 * background.size
    assert not (moved & background).any() and rim.any() and not (rim & moved).all()


def test_a_defect_in_the_tile_corner_is_cut_away() -> None:
    image, mask = _tile((slice(0, 8), slice(0, 8)))
    for seed in range(5):
        _, moved, _, kept = composite(image, mask, 160, np.random.default_rng(seed))
        assert kept < 0.5 and moved.sum() < 0.5 * mask.sum() * (160 / 100) ** 2
