"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomaly_clustering.metrics import clustering_scores, hungarian_mapping, localization_scores, pro_auc

# 6 images, 2 classes; clustering puts one class-0 image with the class-1 images.
#            class:  0  0  0  0  1  1
#          cluster:  0  0  0  1  1  1
TRUE = np.array([0, 0, 0, 0, 1, 1])
PRED = np.array([0, 0, 0, 1, 1, 1])


def _entropy(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_clustering_scores_hand_worked():
    s = clustering_scores(TRUE, PRED)
    # contingency (class × cluster): [[3, 1], [0, 2]] → joint probabilities 3/6, 1/6, 0, 2/6
    mi = 3 / 6 * math.log((3 / 6) / ((4 / 6) * (3 / 6))) + 1 / 6 * math.log((1 / 6) / ((4 / 6) * (3 / 6))) + 2 / 6 * math.log((2 / 6) / ((2 / 6) * (3 / 6)))
    nmi = mi / ((_entropy(4 / 6, 2 / 6) + _entropy(3 / 6, 3 / 6)) / 2)  # arithmetic normalisation
    assert s.nmi == pytest.approx(nmi, abs=1e-9)
    # ARI: pair counts Σ C(n_ij, 2) = 3 + 0 + 1 = 4; rows C(4,2)+C(2,2) = 7; cols 3+3 = 6; C(6,2) = 15
    expected_index = 7 * 6 / 15
    assert s.ari == pytest.approx((4 - expected_index) / ((7 + 6) / 2 - expected_index))  # = 1.2 / 3.7
    assert s.ari == pytest.approx(1.2 / 3.7)
    # Hungarian: cluster 0 → class 0, cluster 1 → class 1; 5 of 6 right
    assert s.f1_micro == pytest.approx(5 / 6)
    # class 0: P = 3/3, R = 3/4 → F1 = 6/7;  class 1: P = 2/3, R = 2/2 → F1 = 4/5
    assert s.f1_macro == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert (s.n_clusters, s.n_classes) == (2, 2)


def test_scores_ignore_cluster_numbering():
    swapped = 1 - PRED  # same partition, other cluster ids: the Hungarian assignment undoes the swap
    assert hungarian_mapping(TRUE, swapped) == {1: 0, 0: 1}
    a, b = clustering_scores(TRUE, PRED), clustering_scores(TRUE, swapped)
    assert a.as_dict() == pytest.approx(b.as_dict())


def test_extra_cluster_counts_as_wrong():
    # 3 clusters for 2 classes: the smallest-overlap cluster maps to no class (−1)
    true = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 2, 1, 1, 1])
    mapping = hungarian_mapping(true, pred)
    assert mapping == {0: 0, 1: 1, 2: -1}
    s = clustering_scores(true, pred)
    assert s.f1_micro == pytest.approx(5 / 6)
    # class 0: P = 2/2, R = 2/3 → 0.8; class 1: P = 3/3, R = 1 → 1
    assert s.f1_macro == pytest.approx((0.8 + 1.0) / 2)
    assert s.n_clusters == 3


def test_perfect_and_mismatched_lengths():
    s = clustering_scores([2, 2, 5, 5, 7], [1, 1, 0, 0, 3])
    assert (s.nmi, s.ari, s.f1_micro, s.f1_macro) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        clustering_scores([0, 1], [0, 1, 1])


def test_image_and_pixel_auroc():
    # image AUROC: anomalous scores {0.35, 0.8} vs normal {0.1, 0.4}: pairs won 3 of 4 → 0.75
    maps = np.zeros((4, 4, 4), np.float32)
    masks = np.zeros((4, 4, 4), bool)
    masks[2, 0, 0] = masks[3, 1, 1] = True
    maps[2, 0, 0], maps[3, 1, 1] = 1.0, 1.0  # pixel-perfect
    scores = localization_scores(maps, np.array([0.1, 0.4, 0.35, 0.8]), masks, np.array([0, 0, 1, 1]))
    assert scores.auroc_image == pytest.approx(0.75)
    assert scores.auroc_pixel == pytest.approx(1.0)
    assert scores.pro_30 == pytest.approx(1.0)
    assert (scores.n_images, scores.n_anomalous) == (4, 2)
    # both anomalous pixels rank below the same 2 of the 62 normal pixels: 4 of 2·62 pairs lost
    maps[0, 3, 3] = maps[1, 3, 3] = 2.0
    maps[3, 1, 1] = 1.5
    maps[2, 0, 0] = 1.0
    s = localization_scores(maps, np.array([0.1, 0.4, 0.35, 0.8]), masks, np.array([0, 0, 1, 1]))
    assert s.auroc_pixel == pytest.approx(1 - 4 / (2 * 62))


def test_auroc_absent_when_undefined():
    maps = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    s = localization_scores(maps, np.array([1.0, 2.0, 3.0]), None, np.array([1, 1, 1]))
    assert s.auroc_image is None and s.auroc_pixel is None and s.pro_30 is None


def test_pro_simple_cases():
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:12, 8:12] = True
    assert pro_auc(masks.astype(np.float32), masks) == pytest.approx(1.0)
    assert pro_auc(1 - masks.astype(np.float32), masks) == pytest.approx(0.0, abs=1e-6)
    # only region 0 found: PRO is 0.5 at FPR 0 and rises linearly to 1 at FPR 1; at FPR 0.3 it is 0.65,
    # so the normalised area up to 0.3 is (0.5 + 0.65) / 2 = 0.575
    half = np.zeros((2, 16, 16), np.float32)
    half[0] = masks[0]
    assert pro_auc(half, masks) == pytest.approx(0.575, abs=1e-4)
