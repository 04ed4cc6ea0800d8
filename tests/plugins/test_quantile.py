"""Blind-LCA's set-level threshold heuristic (supplementary S4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_clustering import runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.examples import make_texture, plant_defect
from anomaly_clustering.plugins.blind_lca.quantile import QuantileHeuristic, quantile_threshold
from anomaly_clustering.records import AnomalyMaps


def test_quantile_threshold_uses_the_share_of_the_lowest_scoring_cluster():
    scores = np.array([0.1, 0.2, 0.15, 0.12, 0.9, 0.8, 0.85, 0.5])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 2])
    t, q, means = quantile_threshold(scores, labels)
    assert q == pytest.approx(0.5)  # cluster 1 (lowest mean score) holds half the images
    assert t == pytest.approx(np.quantile(scores, 0.5))
    assert min(means, key=means.get) == 1
    # relabelling the clusters does not change the threshold
    assert quantile_threshold(scores, (labels + 1) % 3)[0] == pytest.approx(t)


@pytest.fixture(scope="module")
def blob_set(tmp_path_factory):
    """6 good textures and 6 with a planted hole; maps are the (8×8) masks plus noise, so scores separate the groups."""
    root = tmp_path_factory.mktemp("quantile")
    rng = np.random.default_rng(1)
    maps = []
    for i in range(12):
        img = make_texture(rng, 64)
        mask = np.zeros((64, 64), bool)
        if i >= 6:
            img, mask = plant_defect(img, "hole", rng)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"{i:02d}.png")
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((8, 8), Image.BOX), np.float32) / 255
        maps.append(0.05 * small + 0.002 * rng.random((8, 8)))
    maps = np.stack(maps).astype(np.float32)
    return load_image_set(root), AnomalyMaps(maps, maps.reshape(12, -1).max(1), np.full((12, 2), 64))


def test_quantile_heuristic_thresholds_between_good_and_defective(blob_set):
    images, maps = blob_set
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with runtime.settings(quiet=True):
            binarizer = QuantileHeuristic(n_clusters=2, input_size=64).fit(maps, images)
            regions = binarizer.transform(maps, images)
    finally:
        torch.set_num_threads(before)
    assert 0 < binarizer.good_share_ < 1
    assert np.all(regions.thresholds == binarizer.threshold_)
    # the threshold lies at or above the good images' scores: no good image gets a mask
    assert not regions.masks[:6].any()
    assert regions.masks[6:].any(axis=(1, 2)).sum() >= 3
    assert binarizer.get_params()["n_clusters"] == 2


def test_heuristic_k_overrides_the_runs_number_of_clusters(blob_set):
    """heuristic_k sets the k-means groups of S4 whatever K the run clusters into (n_clusters is filled by the run)."""
    images, maps = blob_set
    with runtime.settings(quiet=True):
        fixed = QuantileHeuristic(n_clusters=5, heuristic_k=2, input_size=64).fit(maps, images)
        default = QuantileHeuristic(n_clusters=5, input_size=64).fit(maps, images)
    assert len(fixed.cluster_mean_scores_) == 2 and len(default.cluster_mean_scores_) == 5
    assert fixed.transform(maps, images).info["kmeans_k"] == 2
