"""Blind-LCA representations and Sohn et al.'s baselines on generated textures with two planted defect kinds.

The set crosses two defect kinds (scratch, hole) with two texture looks (plain, darker and blue-tinted), so a
texture-blind global average groups by look while a map-aware representation groups by defect kind.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from anomaly_clustering import runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.examples import make_example_set, make_texture, plant_defect
from anomaly_clustering.records import AnomalyMaps, Regions
from anomaly_clustering.plugins.blind_lca.contrastive import (
    ContrastiveHead, PixelBank, PixelPools, gather_vectors, hadsell_loss, image_neighbours, sample_step,
)
from anomaly_clustering.plugins.blind_lca.descriptor import WeightedDescriptor, normalize_maps
from anomaly_clustering.plugins.sohn.representations import AveragePooling, MaxHausdorff, WeightedAverage, classical_mds
from anomaly_clustering.plugins.common.clusterers import WardClusterer

SIZE = 128
PER_CELL = 5  # images per (defect kind, texture look)


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """(ImageSet, defect labels, AnomalyMaps from the ground-truth masks, Regions) with a per-module feature cache."""
    root = tmp_path_factory.mktemp("two_kinds")
    rng = np.random.default_rng(3)
    masks, labels = [], []
    for kind_id, kind in enumerate(("scratch", "hole")):
        (root / kind).mkdir()
        for look in range(2):
            for i in range(PER_CELL):
                img = make_texture(rng, SIZE)
                if look:  # a nuisance that dominates the global mean: darker, bluer texture
                    img = np.clip(img * np.array([0.55, 0.7, 1.1]), 0, 1)
                img, mask = plant_defect(img, kind, rng)
                Image.fromarray((img * 255).astype(np.uint8)).save(root / kind / f"{look}_{i:02d}.png")
                masks.append((f"{kind}/{look}_{i:02d}.png", mask))
    images = load_image_set(str(root))
    by_name = dict(masks)
    gt = np.stack([by_name[n] for n in images.names]).astype(np.float32)
    labels = np.array([0 if n.startswith("scratch") else 1 for n in images.names])
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(gt)[:, None], 9, 1, 4)[:, 0].numpy()
    maps = AnomalyMaps(blurred + 0.01 * rng.random(blurred.shape, dtype=np.float32), blurred.reshape(len(gt), -1).max(1), np.full((len(gt), 2), SIZE))
    regions = Regions(blurred > 0.3, np.full(len(gt), 0.3, np.float32))
    with runtime.settings(cache_dir=str(root / "_cache"), quiet=True, device="cpu"):
        yield images, labels, maps, regions


def _ari(rep, data) -> float:
    images, labels, maps, regions = data
    with runtime.settings(cache_dir=str(Path(images.root) / "_cache"), quiet=True, device="cpu"):
        emb = rep.fit_transform(images, maps, regions)
    assert emb.vectors.shape[0] == len(images) and np.all(np.isfinite(emb.vectors))
    pred = WardClusterer(2).fit_predict(emb).labels
    return adjusted_rand_score(labels, pred)


def test_average_baseline_is_texture_blind(textures):
    assert _ari(AveragePooling(input_size=SIZE), textures) < 0.5


@pytest.mark.parametrize(
    "rep",
    [
        WeightedDescriptor(input_size=SIZE),
        WeightedAverage(input_size=SIZE, grid=8),
        MaxHausdorff(input_size=SIZE, grid=8),
        ContrastiveHead(input_size=SIZE, epochs=3),
    ],
    ids=["weighted-descriptor", "weighted-average", "max-hausdorff", "contrastive-head"],
)
def test_representation_separates_defect_kinds(rep, textures):
    assert _ari(rep, textures) > 0.8


def test_contrastive_head_transforms_new_images_with_learned_weights(textures):
    images, labels, maps, regions = textures
    with runtime.settings(cache_dir=str(Path(images.root) / "_cache"), quiet=True, device="cpu"):
        _check_transform(images, maps, regions)


def test_contrastive_bank_on_disk_trains_the_same_head(textures):
    """A bank over its memory budget goes to a temporary file (and is removed after); training is unchanged."""
    images, labels, maps, regions = textures
    cache = Path(images.root) / "_cache"
    with runtime.settings(cache_dir=str(cache), quiet=True, device="cpu"):
        in_memory = ContrastiveHead(input_size=SIZE, epochs=1, batch_size=3).fit(images, maps, regions)
        on_disk = ContrastiveHead(input_size=SIZE, epochs=1, batch_size=3, bank_memory_mb=0).fit(images, maps, regions)
    assert not in_memory.bank_on_disk_ and on_disk.bank_on_disk_ and on_disk.bank_mb_ > 0
    assert not list(cache.glob("pixel-bank-*"))
    np.testing.assert_allclose(in_memory.loss_history_, on_disk.loss_history_, rtol=1e-6)
    for a, b in zip(in_memory.head_.parameters(), on_disk.head_.parameters()):
        torch.testing.assert_close(a, b)
    with runtime.settings(cache_dir=str(cache), quiet=True, device="cpu"):
        half = ContrastiveHead(input_size=SIZE, epochs=1, batch_size=3, bank_dtype="float16").fit(images, maps, regions)
    assert half.bank_mb_ == pytest.approx(in_memory.bank_mb_ / 2) and np.isfinite(half.loss_history_).all()


def _check_transform(images, maps, regions):
    head = ContrastiveHead(input_size=SIZE, epochs=1).fit(images, maps, regions)
    assert len(head.loss_history_) == 1 and head.n_positive_pixels_ > 0
    sub = images.subset(range(4))
    sub_maps = AnomalyMaps(maps.maps[:4], maps.scores[:4], maps.image_sizes[:4])
    full = head.transform(images, maps, regions).vectors
    part = head.transform(sub, sub_maps, Regions(regions.masks[:4], regions.thresholds[:4])).vectors
    # normalize_maps="minmax-set" depends on the set, so compare with normalisation off
    head.set_params(normalize_maps="none")
    a = head.transform(images, maps, regions).vectors[:4]
    b = head.transform(sub, sub_maps, Regions(regions.masks[:4], regions.thresholds[:4])).vectors
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert full.shape == (len(images), part.shape[1])


def test_hadsell_loss_pulls_positives_and_pushes_negatives():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1]]), dim=1)
    same = a.clone()
    opposite = -a
    assert hadsell_loss([(a, same)], [], 0.5).item() < 0.02
    assert hadsell_loss([(a, opposite)], [], 0.5).item() > 3.5  # squared distance of antipodal unit vectors ≈ 4
    assert hadsell_loss([], [(a, same)], 0.5).item() > 0.45  # negatives at distance 0 cost ≈ margin
    assert hadsell_loss([], [(a, opposite)], 0.5).item() == 0.0  # beyond the margin: no cost
    assert hadsell_loss([(a[:0], a)], [(a[:0], a)], 0.5).item() == 0.0  # empty sets are skipped


def test_sampling_respects_thresholds_neighbours_and_far_half():
    rng = np.random.default_rng(0)
    maps = torch.zeros(6, 4, 4)
    maps[:3, 0, :2] = 1.0  # images 0–2: two anomalous pixels each; images 3–5 none
    pools = PixelPools.from_maps(maps, np.full(6, 0.5))
    assert [len(p) for p in pools.positives] == [2, 2, 2, 0, 0, 0]
    assert all(set(p) == {0, 1} for p in pools.positives[:3])
    desc = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], np.float32)
    neighbours, far = image_neighbours(desc, k=2)
    assert set(neighbours[0]) == {1, 2} and set(neighbours[4]) == {3, 5}
    assert set(far[0]) == {3, 4, 5}
    step = sample_step(0, pools, neighbours, far, rng, n_self=7, n_pool=11, n_counter_images=2)
    assert sum(len(p) for _, p in step["pos_i"]) == 7 and all(j == 0 for j, _ in step["pos_i"])
    assert sum(len(p) for _, p in step["pos_nb"]) == 11 and {j for j, _ in step["pos_nb"]} <= {0, 1, 2}
    assert all(set(p) <= {0, 1} for _, p in step["pos_nb"])
    assert all(set(p).isdisjoint({0, 1}) for _, p in step["neg_nb"])
    assert step["pos_counter"] == []  # the far half (3–5) holds no positives
    step3 = sample_step(3, pools, neighbours, far, rng)
    assert step3["pos_i"] == [] and {j for j, _ in step3["pos_counter"]} <= {0, 1, 2}


def test_a_steps_vectors_come_from_the_bank_rows_of_its_sampled_pixels():
    """Each part of a step reads its pixels' vectors from the bank (positives or negatives by the part's name)."""
    pools = PixelPools([np.array([1, 4]), np.array([2])], [np.array([0, 3]), np.array([0, 1, 3])])
    bank = PixelBank(2, 3, 2, memory_mb=1.0, batch_size=2)
    rows = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2)
    bank.put_batch(0, rows)
    parts = {"pos_i": [(0, np.array([4, 1]))], "neg_nb": [(0, np.array([3])), (1, np.array([1, 3]))], "pos_counter": []}
    v = gather_vectors(parts, pools, bank)
    np.testing.assert_array_equal(v["pos_i"].numpy(), rows[0, 0, [1, 0]])  # positions 4, 1 sit in slots 1, 0
    np.testing.assert_array_equal(v["neg_nb"].numpy(), np.concatenate([rows[0, 1, [1]], rows[1, 1, [1, 2]]]))
    assert v["pos_counter"].shape == (0, 2) and v["pos_counter"].dtype == torch.float32


def test_contrastive_training_is_reproducible_and_records_every_epoch(textures):
    images, _, maps, regions = textures
    with runtime.settings(quiet=True, device="cpu"):
        a = ContrastiveHead(input_size=SIZE, epochs=2, seed=4).fit(images, maps, regions)
        b = ContrastiveHead(input_size=SIZE, epochs=2, seed=4).fit(images, maps, regions)
        c = ContrastiveHead(input_size=SIZE, epochs=2, seed=5).fit(images, maps, regions)
    assert len(a.loss_history_) == 2 and a.loss_history_ == b.loss_history_ and a.loss_history_ != c.loss_history_
    assert all(torch.equal(x, y) for x, y in zip(a.head_.state_dict().values(), b.head_.state_dict().values()))


def test_map_normalisation_and_mds():
    m = np.stack([np.full((2, 2), 5.0), np.arange(4.0).reshape(2, 2) + 5])
    s = normalize_maps(m, "minmax-set")
    assert s.min() == 0 and np.isclose(s.max(), 0.1) and np.allclose(s[0], 0)
    i = normalize_maps(m, "minmax-image")
    assert np.isclose(i[1].max(), 0.1) and np.allclose(normalize_maps(m, "none"), m)
    with pytest.raises(ValueError):
        normalize_maps(m, "zscore")
    pts = np.random.default_rng(0).normal(size=(7, 3))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    emb = classical_mds(d)
    np.testing.assert_allclose(np.linalg.norm(emb[:, None] - emb[None], axis=-1), d, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["weighted", "blind-lca"])
def test_cli_fit_end_to_end(classifier, tmp_path):
    data = make_example_set(tmp_path / "ex", per_kind=4, n_good=4, size=96)
    run = tmp_path / f"run_{classifier}"
    from anomaly_clustering import registry

    quantile = registry.discover()["binarizer"].get("quantile-heuristic")
    extra = ["--binarizer", "otsu"] if classifier == "blind-lca" and not (quantile and quantile.ok) else []
    cmd = [sys.executable, "-m", "anomaly_clustering.cli", "fit", "--data", str(data), "--localizer", "color-stats", "--classifier", classifier, "--n_clusters", "4", "--run", str(run), "--input_size", "96", "--quiet", "true", "--save_pngs", "false", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run).exists()


def test_contrastive_positives_come_from_the_binarizers_masks(textures):
    """Masks without a usable threshold (the oracle binarizer's are NaN) still give positives; an all-False mask set
    gives none; the masks are taken to the feature grid by area."""
    from anomaly_clustering.plugins.blind_lca.descriptor import masks_on_grid

    images, labels, maps, regions = textures
    oracle_like = Regions(regions.masks, np.full(len(images), np.nan, np.float32))
    with runtime.settings(cache_dir=str(Path(images.root) / "_cache"), quiet=True, device="cpu"):
        head = ContrastiveHead(input_size=SIZE, epochs=1).fit(images, maps, oracle_like)
    assert head.n_positive_pixels_ > 0
    grid = masks_on_grid(regions.masks, (16, 16))
    assert grid.shape == (len(images), 16, 16) and grid.any() and not grid.all()
    pools = PixelPools.from_masks(np.zeros((2, 4, 4), bool))
    assert all(len(p) == 0 for p in pools.positives) and all(len(p) == 16 for p in pools.negatives)
