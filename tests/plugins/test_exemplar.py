"""The hysteresis gate's exemplar score on generated two-level boards (``plugins/mutual/exemplar.py``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from anomaly_clustering.data import load_image_set
from anomaly_clustering.plugins.mutual import HysteresisThreshold
from anomaly_clustering.plugins.mutual import exemplar
from anomaly_clustering.records import AnomalyMaps

SIDE, GRID = 128, 64


def _layouts(rng: np.random.Generator, n: int = 3, size: int = 176) -> list[np.ndarray]:
    """Large boards of horizontal and vertical traces and square pads, from which every image is a crop."""
    boards = []
    for _ in range(n):
        b = np.zeros((size, size), bool)
        for y in rng.choice(np.arange(8, size - 8, 12), 8, replace=False):
            x0, x1 = sorted(rng.integers(0, size, 2))
            b[y:y + int(rng.integers(4, 8)), x0:x1 + 40] = True
        for x in rng.choice(np.arange(8, size - 8, 12), 8, replace=False):
            y0, y1 = sorted(rng.integers(0, size, 2))
            b[y0:y1 + 40, x:x + int(rng.integers(4, 8))] = True
        for y, x in rng.integers(10, size - 20, (8, 2)):
            b[y:y + 10, x:x + 10] = True
        boards.append(b)
    return boards


def _board_set(tmp_path, n: int = 24, defective: int = 10, seed: int = 0, layout_seed: int = 0):
    """Two-level crops of three layouts; the first ``defective`` get a random pattern of their pixels flipped in a 7×7
    block (missing or extra copper, no two alike). The maps peak there on those images and at a random place on the others (FCA's false peak on a
    rare structure), all at the same height, so the map's own score cannot tell them apart. ``layout_seed`` draws
    the boards, ``seed`` the crops and changes."""
    rng = np.random.default_rng(seed)
    boards, maps, truth = _layouts(np.random.default_rng(layout_seed)), np.zeros((n, GRID, GRID), np.float32), np.zeros(n, bool)
    yy, xx = np.mgrid[0:GRID, 0:GRID]
    for i in range(n):
        b = boards[i % 3]
        y, x = rng.integers(0, b.shape[0] - SIDE, 2)
        crop = b[y:y + SIDE, x:x + SIDE].copy()
        cy, cx = rng.integers(24, SIDE - 24, 2)
        if i < defective:
            crop[cy - 3:cy + 4, cx - 3:cx + 4] ^= rng.random((7, 7)) < 0.6
            truth[i] = True
        Image.fromarray(crop.astype(np.uint8) * 255).save(tmp_path / f"{i:02d}.png")
        maps[i] = 0.2 + np.exp(-0.5 * (np.hypot(yy - cy / 2, xx - cx / 2) / 2.0) ** 2)
    images = load_image_set(str(tmp_path))
    order = np.array([int(name[:2]) for name in images.names])
    scores = maps.reshape(n, -1).max(1)
    return images, AnomalyMaps(maps[order], scores[order], np.full((n, 2), SIDE)), truth[order]


def test_the_exemplar_gate_flags_the_boards_with_a_change_and_leaves_the_others_empty(tmp_path):
    images, maps, truth = _board_set(tmp_path)
    assert exemplar.is_two_level(images)
    gate = HysteresisThreshold(score="auto").fit(maps, images)
    assert gate.score_ == "exemplar", "a black-and-white set is scored by its exemplars"
    scores = gate.gate_scores(maps, images)
    assert scores[truth].min() > scores[~truth].max(), "every changed board differs more from its nearest twin window"
    regions = gate.transform(maps, images)
    assert np.array_equal(regions.masks.any((1, 2)), truth), "exactly the changed boards get a region"
    assert regions.info["score"] == "exemplar"
    image_gate = HysteresisThreshold(score="image").fit_transform(maps, images)
    assert not np.array_equal(image_gate.masks.any((1, 2)), truth), "the map's own score (equal peaks) cannot do it"


def test_a_grey_set_keeps_the_map_score_under_auto(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = load_image_set(str(tmp_path))
    assert not exemplar.is_two_level(images)
    maps = AnomalyMaps(rng.random((6, GRID, GRID), dtype=np.float32), rng.random(6), np.full((6, 2), SIDE))
    auto = HysteresisThreshold(score="auto").fit_transform(maps, images)
    plain = HysteresisThreshold(score="image").fit_transform(maps, images)
    assert auto.info["score"] == "image" and np.array_equal(auto.masks, plain.masks)


def test_the_gate_survives_pickling_and_scores_new_boards(tmp_path):
    (tmp_path / "fit").mkdir()
    (tmp_path / "new").mkdir()
    images, maps, truth = _board_set(tmp_path / "fit")
    gate = HysteresisThreshold(score="exemplar").fit(maps, images)
    before = gate.transform(maps, images).masks
    restored = pickle.loads(pickle.dumps(gate))
    assert "_bank" not in restored.__dict__, "the search index is rebuilt, not stored"
    assert np.array_equal(restored.transform(maps, images).masks, before)
    new_images, new_maps, new_truth = _board_set(tmp_path / "new", n=9, defective=4, seed=5)  # the same boards, other crops
    flagged = restored.transform(new_maps, new_images).masks.any((1, 2))
    assert flagged[new_truth].all() and not flagged[~new_truth].any(), "boards it never saw are judged against the bank"


def test_the_exemplar_score_needs_the_images(tmp_path):
    images, maps, _ = _board_set(tmp_path, n=6, defective=2)
    with pytest.raises(ValueError, match="pass the images"):
        HysteresisThreshold(score="exemplar").fit(maps, None)
    gate = HysteresisThreshold(score="exemplar").fit(maps, images)
    with pytest.raises(ValueError, match="pass the images"):
        gate.transform(maps, None)
    with pytest.raises(ValueError, match="exemplar_window"):
        HysteresisThreshold(exemplar_window=1.5).fit(maps, images)
