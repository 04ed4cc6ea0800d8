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


def test_write_object_set_keeps_every_defective_image_whose_defect_survives_and_the_good_asked_for(tmp_path: Path) -> None:
    from anomaly_clustering.data import load_ground_truth, load_image_set
    from anomaly_clustering.examples import make_example_set
    from object_composite import write_object_set

    source = load_image_set(make_example_set(tmp_path / "src", per_kind=3, n_good=6, size=96, seed=0))
    labels = list(load_ground_truth(source).labels)
    write_object_set(source, labels, tmp_path / "obj" / "ex_objects", good=4, size=96, seed=0)
    written = load_image_set(tmp_path / "obj" / "ex_objects" / "test")
    gt = load_ground_truth(written)
    kinds = np.asarray(gt.labels)
    assert (kinds == "good").sum() == 4
    assert 0 < (kinds != "good").sum() <= sum(k != "good" for k in labels)
    assert set(kinds.tolist()) <= set(labels)
    for i in np.flatnonzero(kinds != "good"):  # every defective object keeps a defect in its moved mask
        assert gt.load_mask(int(i), (96, 96)).any()
