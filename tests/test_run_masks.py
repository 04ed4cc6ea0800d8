"""``benchmarks/run_masks.py``: the masks of a finished run scored against the ground truth — a run whose masks ARE the
ground truth scores IoU 100 with every good image empty; an all-ones mask scores no empty good image."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from run_masks import run_mask_scores  # noqa: E402


def test_masks_equal_to_the_truth_score_perfectly(fitted_run, example_data, tmp_path) -> None:
    from anomaly_clustering.data import load_ground_truth, load_image_set

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    masks_file = run / "records" / "regions" / "masks.npy"
    h, w = np.load(masks_file).shape[1:]
    images = load_image_set(str(example_data))
    gt = load_ground_truth(images)
    names = [row["image"] for row in csv.DictReader(open(run / "clusters.csv"))]
    index = {n: i for i, n in enumerate(images.names)}
    truth = np.stack([gt.load_mask(index[n], (h, w)) for n in names]).astype(bool)
    is_good = np.array([gt.labels[index[n]] == "good" for n in names])
    assert is_good.any() and (~is_good).any() and not truth[is_good].any()

    np.save(masks_file, truth)
    perfect = run_mask_scores(run, example_data)
    assert perfect["iou"] == 100.0 and perfect["f1"] == 100.0 and perfect["empty_good"] == 100.0
    assert perfect["flagged_anomalous"] == 100.0

    np.save(masks_file, np.ones_like(truth))
    flooded = run_mask_scores(run, example_data)
    assert flooded["empty_good"] == 0.0 and flooded["flagged_anomalous"] == 100.0
    assert 0 < flooded["iou"] < 100


def test_image_score_rules_on_saved_maps(fitted_run) -> None:
    from sklearn.metrics import roc_auc_score

    from run_masks import image_score_aurocs

    aurocs = image_score_aurocs(fitted_run)
    rows = list(csv.DictReader(open(fitted_run / "clusters.csv")))
    maxima = [float(np.load(fitted_run / r["map_file"]).max()) for r in rows]
    anomalous = [not r["image"].startswith("good/") for r in rows]
    assert aurocs["max"] == roc_auc_score(anomalous, maxima)
    assert len(aurocs) > 10 and all(0.0 <= a <= 1.0 for a in aurocs.values())
