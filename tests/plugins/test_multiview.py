"""The multi-view classifier's parts: views (boxes, pooled statistics), representation, normal-first and consensus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import normalized_mutual_info_score

from anomaly_clustering import runtime, testing
from anomaly_clustering.plugins.multiview.clusterers import (
    ConsensusClusterer,
    NormalFirstClusterer,
    co_association,
    normal_directions,
    otsu_split,
)
from anomaly_clustering.plugins.multiview.representation import MultiViewDescriptor
from anomaly_clustering.plugins.multiview.views import anomaly_boxes, pooled_statistics
from anomaly_clustering.records import AnomalyMaps, Embeddings

SMALL = {"context_size": 64, "crop_size": 64}


def test_otsu_split_finds_the_gap_and_its_strength() -> None:
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(0, 0.1, 80), rng.normal(5, 0.1, 20)])
    t, eta = otsu_split(s)
    assert 0.5 < t < 4.5 and eta > 0.9
    assert otsu_split(np.ones(10))[1] == 0.0
    _, eta_flat = otsu_split(rng.uniform(0, 1, 200))
    assert eta_flat < 0.8  # a uniform spread splits, but far less cleanly


def test_anomaly_boxes_surround_the_peak_region_in_image_pixels() -> None:
    maps = np.zeros((2, 32, 32), np.float32)
    maps[0, 4:8, 20:26] = 1.0  # a blob at rows 4-7, cols 20-25
    maps[1] += np.linspace(0, 1, 32)[None, :]  # a ramp: the peak column on the right
    sizes = np.array([[320, 640], [64, 64]])
    boxes = anomaly_boxes(maps, sizes, level=0.5, margin=0.0, min_side=0.1)
    x0, y0, x1, y1 = boxes[0]
    assert x1 - x0 == y1 - y0  # square
    sy, sx = 320 / 32, 640 / 32
    assert x0 <= 20 * sx and x1 >= 26 * sx and y0 <= 4 * sy and y1 >= 8 * sy  # the blob, in image pixels
    assert 0 <= x0 and x1 <= 640 and 0 <= y0 and y1 <= 320
    bx0, _, bx1, _ = boxes[1]
    assert bx1 == 64 and 0 <= bx0 < bx1  # shifted inside the image, on the right
    wide = anomaly_boxes(maps[:1], sizes[:1], margin=0.0, min_side=0.9)
    assert wide[0, 2] - wide[0, 0] == round(0.9 * 320)


def test_pooled_statistics_mean_and_std_per_channel() -> None:
    a = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    b = torch.ones(2, 5, 2, 2)
    out = pooled_statistics([a, b], ("mean", "std"))
    assert out.shape == (2, 3 + 3 + 5 + 5)
    assert torch.allclose(out[:, :3], a.flatten(2).mean(2))
    assert torch.allclose(out[:, 3:6], a.flatten(2).std(2, unbiased=False))
    assert torch.all(out[:, 11:] == 0)
    with pytest.raises(ValueError):
        pooled_statistics([a], ("median",))


def _blobs(k: int = 3, per: int = 20, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, d))
    truth = np.repeat(np.arange(k), per)
    return (centres[truth] + rng.normal(0, 0.5, (len(truth), d))).astype(np.float32), truth


def test_normal_first_sets_a_low_score_majority_aside() -> None:
    x, truth = _blobs(3, 20)
    normal = np.zeros(60 + 60, bool)
    normal[60:] = True
    rng = np.random.default_rng(1)
    x = np.concatenate([x, rng.normal(0, 0.5, (60, x.shape[1])).astype(np.float32)])  # normals overlap nothing in score
    scores = np.where(normal, 0.01, 1.0) * rng.uniform(0.9, 1.1, len(normal))
    emb = Embeddings.per_image(x, {"image_scores": scores.tolist()})
    res = NormalFirstClusterer(n_clusters=4).fit_predict(emb)
    assert res.info["normal_set_aside"] and np.all(res.labels[normal] == 3)
    assert normalized_mutual_info_score(truth, res.labels[:60]) == pytest.approx(1.0)
    # unimodal scores (or none): plain Ward into K
    flat = Embeddings.per_image(x, {"image_scores": np.exp(rng.normal(0, 0.3, len(x))).tolist()})  # log-normal: unimodal
    assert not NormalFirstClusterer(n_clusters=4).fit_predict(flat).info["normal_set_aside"]
    assert not NormalFirstClusterer(n_clusters=4).fit_predict(Embeddings.per_image(x)).info["normal_set_aside"]
    with pytest.raises(ValueError):
        NormalFirstClusterer(n_clusters=4).fit_predict(Embeddings.per_image(x, {"image_scores": [1.0]}))
    with pytest.raises(ValueError):
        NormalFirstClusterer(n_clusters=4, min_normal_share=1.5).fit_predict(emb)


def test_normal_first_by_region_sets_the_images_without_a_region_aside() -> None:
    x, truth = _blobs(3, 20)
    rng = np.random.default_rng(2)
    normal_x = rng.normal(0, 0.5, (90, x.shape[1])).astype(np.float32)
    x = np.concatenate([x, normal_x])
    has_region = np.r_[np.ones(60, bool), np.zeros(90, bool)]
    has_region[[0, 25]] = False  # two defects the binarizer missed: they go with the normals
    scores = np.ones(len(x)).tolist()  # flat scores: the score rule could not split them
    emb = Embeddings.per_image(x, {"image_scores": scores, "has_region": has_region.tolist()})
    model = NormalFirstClusterer(n_clusters=4, normal_by="region")
    res = model.fit_predict(emb)
    assert res.info["normal_set_aside"] and res.info["normal_share"] == pytest.approx(92 / 150)
    assert np.all(res.labels[~has_region] == 3) and not np.any(res.labels[has_region] == 3)
    kept = has_region[:60]
    assert normalized_mutual_info_score(truth[kept], res.labels[:60][kept]) == pytest.approx(1.0)
    assert not NormalFirstClusterer(n_clusters=4, normal_by="score").fit_predict(emb).info["normal_set_aside"]
    # predict: the same verdict for new images; the others go to the nearest type centroid, never the normal one
    new = Embeddings.per_image(x[[1, 30, 70]], {"has_region": [True, True, False]})
    assert model.predict(new).labels.tolist() == [res.labels[1], res.labels[30], 3]
    # a minority without a region (most images defective): Ward on all, as if there were no rule
    few = has_region.copy()
    few[60:130] = True
    plain = NormalFirstClusterer(n_clusters=4, normal_by="region").fit_predict(Embeddings.per_image(x, {"has_region": few.tolist()}))
    assert not plain.info["normal_set_aside"]
    ward = AgglomerativeClustering(n_clusters=4, linkage="ward").fit_predict(x.astype(np.float64))
    assert normalized_mutual_info_score(ward, plain.labels) == pytest.approx(1.0)
    # every image defective, most of several types left without a region by a set-level gate: the empty group splits
    # clearly into its types, so it is not one normal population and nothing is set aside
    y, types = _blobs(5, 30, seed=3)
    empty = types < 4  # four types empty, one with regions: 80 % without a region
    defective = Embeddings.per_image(y, {"has_region": (~empty).tolist()})
    checked = NormalFirstClusterer(n_clusters=5, normal_by="region").fit_predict(defective)
    assert not checked.info["normal_set_aside"] and checked.info["silhouette_normal"] > checked.info["silhouette_rest"]
    assert normalized_mutual_info_score(types, checked.labels) == pytest.approx(1.0)
    unchecked = NormalFirstClusterer(n_clusters=5, normal_by="region", structure_check=False).fit_predict(defective)
    assert unchecked.info["normal_set_aside"] and normalized_mutual_info_score(types, unchecked.labels) < 0.7
    assert res.info["silhouette_normal"] < res.info["silhouette_rest"]  # the normals above: one population
    with pytest.raises(ValueError, match="has_region"):
        NormalFirstClusterer(n_clusters=4, normal_by="region").fit_predict(Embeddings.per_image(x, {"image_scores": scores}))
    with pytest.raises(ValueError, match="entries"):
        NormalFirstClusterer(n_clusters=4, normal_by="region").fit_predict(Embeddings.per_image(x, {"has_region": [True]}))
    with pytest.raises(ValueError, match="normal_by"):
        NormalFirstClusterer(n_clusters=4, normal_by="mask").fit_predict(emb)
    with pytest.raises(RuntimeError):
        NormalFirstClusterer(n_clusters=4).predict(emb)


def _types_under_a_shared_nuisance(seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three defect types (dims 0-4) and a normal majority, all under one nuisance every image shares: three product
    variants far apart along dim 9, wider than the types' spread (Ward alone splits the variants, not the types)."""
    rng = np.random.default_rng(seed)
    types = np.repeat(np.arange(3), 30)
    centres = np.zeros((3, 10))
    centres[:, :5] = rng.normal(0, 3, (3, 5))
    defects = centres[types] + rng.normal(0, 0.3, (90, 10))
    normals = rng.normal(0, 0.3, (150, 10))
    x = np.concatenate([defects, normals])
    x[:, 9] += rng.choice([-40.0, 0.0, 40.0], len(x))
    has_region = np.r_[np.ones(90, bool), np.zeros(150, bool)]
    return x.astype(np.float32), types, has_region


@pytest.mark.parametrize("shape", [(40, 120), (200, 12)])  # fewer images than dimensions (the usual case), and more
def test_normal_directions_span_the_leading_principal_subspace(shape) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=shape) * np.linspace(4.0, 0.1, shape[1])
    c = x - x.mean(0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    for share in (0.1, 0.5, 0.9):
        r = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), share)) + 1
        v = normal_directions(x, share)
        assert v.shape == (r, shape[1])
        np.testing.assert_allclose(v @ v.T, np.eye(r), atol=1e-8)
        np.testing.assert_allclose(v.T @ v, vt[:r].T @ vt[:r], atol=1e-8)
    assert normal_directions(np.ones((5, 3)), 0.5).shape == (0, 3)  # no variation: nothing to remove


def test_normal_first_removes_the_normal_groups_own_variation_before_ward() -> None:
    x, types, has_region = _types_under_a_shared_nuisance()
    emb = Embeddings.per_image(x, {"has_region": has_region.tolist()})
    # the variants split the normal group too, so the structure check is off here: this test is about the projection
    plain = NormalFirstClusterer(n_clusters=4, normal_by="region", structure_check=False).fit_predict(emb)
    assert plain.info["normal_set_aside"] and "normal_directions_removed" not in plain.info
    assert normalized_mutual_info_score(types, plain.labels[:90]) < 0.5  # Ward follows the variants
    model = NormalFirstClusterer(n_clusters=4, normal_by="region", structure_check=False, normal_variation=0.5)
    res = model.fit_predict(emb)
    assert res.info["normal_directions_removed"] == 1 and model.normal_basis_.shape == (1, 10)
    assert abs(model.normal_basis_[0, 9]) > 0.99  # the variants' axis, learned from the normal images alone
    assert normalized_mutual_info_score(types, res.labels[:90]) == pytest.approx(1.0)
    assert np.all(res.labels[90:] == 3)
    # a large normal group: the directions are estimated on a seeded sample of it, with the same outcome here
    sampled = NormalFirstClusterer(n_clusters=4, normal_by="region", structure_check=False, normal_variation=0.5, sample=40)
    assert normalized_mutual_info_score(res.labels, sampled.fit_predict(emb).labels) == pytest.approx(1.0)
    # predict projects new images the same way: a defect of each type under another variant joins its type
    new = x[[0, 30, 60, 100]].copy()
    new[:3, 9] *= -1.0
    pred = model.predict(Embeddings.per_image(new, {"has_region": [True, True, True, False]}))
    assert pred.labels.tolist() == [res.labels[0], res.labels[30], res.labels[60], 3]
    # the rule off (no normal group set aside): nothing is removed, Ward on all as before
    few = np.ones(len(x), bool)
    off = NormalFirstClusterer(n_clusters=4, normal_by="region", normal_variation=0.5)
    assert "normal_directions_removed" not in off.fit_predict(Embeddings.per_image(x, {"has_region": few.tolist()})).info
    assert off.normal_basis_ is None
    for bad in (-0.1, 1.0, True, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="normal_variation"):
            NormalFirstClusterer(n_clusters=4, normal_by="region", normal_variation=bad).fit_predict(emb)


def test_consensus_recovers_blobs_reproducibly_by_seed() -> None:
    x, truth = _blobs(4, 15, d=12)
    emb = Embeddings.per_image(x)
    a = ConsensusClusterer(n_clusters=4, n_runs=8, seed=3).fit_predict(emb)
    b = ConsensusClusterer(n_clusters=4, n_runs=8, seed=3).fit_predict(emb)
    assert normalized_mutual_info_score(truth, a.labels) == pytest.approx(1.0)
    assert np.array_equal(a.labels, b.labels)
    avg = ConsensusClusterer(n_clusters=4, n_runs=8, final="average", seed=0).fit_predict(emb)
    assert normalized_mutual_info_score(truth, avg.labels) == pytest.approx(1.0)
    model = ConsensusClusterer(n_clusters=4, n_runs=4, seed=0)
    model.fit_predict(emb)
    assert np.array_equal(model.predict(emb).labels, nearest := model.predict(emb).labels) and len(nearest) == len(x)
    with pytest.raises(ValueError):
        ConsensusClusterer(n_clusters=4, final="single").fit_predict(emb)
    with pytest.raises(RuntimeError):
        ConsensusClusterer(n_clusters=4).predict(emb)


def test_co_association_counts_shared_clusters() -> None:
    co = co_association([np.array([0, 0, 1]), np.array([0, 1, 1])])
    assert np.allclose(co, [[1, 0.5, 0], [0.5, 1, 0.5], [0, 0.5, 1]])


def test_clusterers_pass_the_conformance_kit() -> None:
    testing.check_plugin("clusterer", NormalFirstClusterer)
    emb, truth = testing.example_embeddings(3)
    with_regions = Embeddings(emb.vectors, emb.image_index, emb.n_images, emb.weights, {**emb.info, "has_region": [True] * emb.n_images})
    testing.check_clusterer(NormalFirstClusterer, with_regions, truth, normal_by="region")
    testing.check_plugin("clusterer", ConsensusClusterer, n_runs=6)


def test_representation_conformance_and_views(tmp_path) -> None:
    testing.check_plugin("representation", MultiViewDescriptor, **SMALL)
    images = testing.example_images()
    maps = testing.example_maps(images)
    regions = testing.example_regions(maps)
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        est = MultiViewDescriptor(**SMALL)
        emb = est.fit_transform(images, maps, regions)
        assert emb.vectors.shape[0] == len(images) and sum(emb.info["view_dims"]) == emb.vectors.shape[1]
        assert emb.info["image_scores"] == pytest.approx(np.asarray(maps.scores).tolist())
        assert emb.info["has_region"] == np.asarray(regions.masks).reshape(len(images), -1).any(1).tolist()
        ctx = MultiViewDescriptor(views=("context",), view_weights=(1.0,), **SMALL).fit_transform(images, maps, regions)
        assert np.allclose(emb.vectors[:, : ctx.vectors.shape[1]], ctx.vectors, atol=1e-5)  # the context view is the first block
        assert (tmp_path / "multiview").is_dir()  # views cached by content, one verified entry per view


def test_extra_backbones_put_each_views_parts_side_by_side_at_the_views_weight(tmp_path) -> None:
    images = testing.example_images()
    maps = testing.example_maps(images)
    regions = testing.example_regions(maps)
    one = {"views": ("context",), "view_weights": (1.0,), **SMALL}
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        both = MultiViewDescriptor(extra_backbones=("tf_efficientnet_lite1",), **one).fit_transform(images, maps, regions)
        lite0 = MultiViewDescriptor(**one).fit_transform(images, maps, regions).vectors
        lite1 = MultiViewDescriptor(backbone="tf_efficientnet_lite1", **one).fit_transform(images, maps, regions).vectors
    assert both.info["view_dims"] == [lite0.shape[1] + lite1.shape[1]] and both.info["extra_backbones"] == ["tf_efficientnet_lite1"]
    assert np.allclose(both.vectors, np.concatenate([lite0, lite1], 1) / np.sqrt(2), atol=1e-5)
    assert not np.allclose(lite0, lite1[:, : lite0.shape[1]], atol=1e-2)  # the second part is another backbone's description
    for bad in ("tf_efficientnet_lite1", ("tf_efficientnet_lite0",), ("",), None, ("tf_efficientnet_lite1", "tf_efficientnet_lite1")):
        with pytest.raises(ValueError, match="extra_backbones"):
            MultiViewDescriptor(extra_backbones=bad, **one).fit(images, maps, regions)


def test_view_cache_is_verified_and_a_damaged_entry_recomputed(tmp_path) -> None:
    from anomaly_clustering.backbones import FeatureSpec
    from anomaly_clustering.plugins.multiview.views import VIEW_FILE, view_vectors

    images = testing.example_images()
    spec = FeatureSpec("tf_efficientnet_lite0", ("3", "4"), 64)
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        first = view_vectors(images, "context", spec, ("mean", "std"))
        (entry,) = (tmp_path / "multiview").glob(f"*/{VIEW_FILE}")
        np.save(entry, np.zeros_like(first))  # same shape, other bytes: only the checksum can tell
        again = view_vectors(images, "context", spec, ("mean", "std"))
        assert np.allclose(again, first, atol=1e-6) and np.abs(again).sum() > 0
        (entry,) = (tmp_path / "multiview").glob(f"*/{VIEW_FILE}")
        assert np.array_equal(np.load(entry), again)  # the recomputed view was stored anew


@pytest.mark.parametrize("bad", [{"views": ("nope",), "view_weights": (1.0,)}, {"view_weights": (1.0,)}, {"view_weights": (0.0, 0.0)}, {"box_level": 1.5}, {"crop_size": 8}])
def test_representation_rejects_bad_options_before_work(bad) -> None:
    images = testing.example_images()
    maps = testing.example_maps(images)
    with pytest.raises(ValueError):
        MultiViewDescriptor(**{**SMALL, **bad}).fit(images, maps, testing.example_regions(maps))
    with pytest.raises(RuntimeError):
        MultiViewDescriptor(**SMALL).transform(images, maps, testing.example_regions(maps))


def test_maps_of_the_wrong_length_are_an_error() -> None:
    images = testing.example_images()
    maps = testing.example_maps(images)
    short = AnomalyMaps(np.asarray(maps.maps)[:2], np.asarray(maps.scores)[:2], np.asarray(maps.image_sizes)[:2])
    with pytest.raises(ValueError):
        MultiViewDescriptor(**SMALL).fit(images, short, testing.example_regions(maps))


def test_view_select_keeps_the_view_with_cluster_structure() -> None:
    from anomaly_clustering.plugins.multiview.clusterers import ViewSelectClusterer, view_subsets

    assert view_subsets(2) == [(0,), (1,), (0, 1)]
    x, truth = _blobs(3, 20, d=6)
    noise = np.random.default_rng(5).normal(0, 3.0, (len(x), 40)).astype(np.float32)
    emb = Embeddings.per_image(np.concatenate([noise, x], 1), {"view_dims": [40, 6], "views": ["noise", "signal"]})
    res = ViewSelectClusterer(n_clusters=3).fit_predict(emb)
    assert res.info["views_chosen"] == ["signal"]
    assert normalized_mutual_info_score(truth, res.labels) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ViewSelectClusterer(n_clusters=3).fit_predict(Embeddings.per_image(x, {"view_dims": [2, 2]}))
    testing.check_plugin("clusterer", ViewSelectClusterer)


def test_average_view_is_the_mean_of_the_shared_features(tmp_path) -> None:
    from anomaly_clustering.backbones import FeatureSpec, extract_features
    from anomaly_clustering.plugins.multiview.views import view_vectors

    images = testing.example_images()
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        spec = FeatureSpec("tf_efficientnet_lite0", (), 64)
        v = view_vectors(images, "average", spec, ())
        f = extract_features(images, spec)
        assert np.allclose(v, np.asarray(f.data[:], np.float32).mean(axis=(2, 3)), atol=1e-5)


def test_anomaly_view_is_the_standardised_eq2_descriptor(tmp_path) -> None:
    from anomaly_clustering.plugins.blind_lca.descriptor import WeightedDescriptor

    images = testing.example_images()
    maps = testing.example_maps(images)
    regions = testing.example_regions(maps)
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        emb = MultiViewDescriptor(views=("anomaly", "context"), view_weights=(1.0, 1.0), average_size=64, **SMALL).fit_transform(images, maps, regions)
        eq2 = WeightedDescriptor(input_size=64).fit_transform(images, maps, regions).vectors
    eq2 = eq2 - eq2.mean(0)
    eq2 = eq2 / np.linalg.norm(eq2, axis=1).mean()
    assert emb.info["views"] == ["anomaly", "context"]
    assert np.allclose(emb.vectors[:, : eq2.shape[1]], eq2, atol=1e-4)


@pytest.mark.parametrize("gate", ["score", "mask"])
def test_crop_gate_leaves_normal_looking_images_on_their_other_views(tmp_path, gate) -> None:
    images = testing.example_images()
    maps = testing.example_maps(images)
    regions = testing.example_regions(maps)
    anomalous = np.asarray(regions.masks).reshape(len(maps), -1).any(1)
    assert 0 < anomalous.sum() < len(maps)  # the generated set has good images without a region
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        est = MultiViewDescriptor(crop_gate=gate, **SMALL)
        emb = est.fit_transform(images, maps, regions)
        ungated = MultiViewDescriptor(**SMALL).fit_transform(images, maps, regions)
    weights = est.crop_weights(maps, regions)
    assert set(np.unique(weights)) <= {0.0, 1.0} and 0 < weights.sum() < len(maps)
    if gate == "mask":
        assert np.array_equal(weights.astype(bool), anomalous)
    else:  # the good images of the generated set score lowest: they are the ones left without a crop
        assert not weights[~anomalous].any()
    ctx_dim, crop = emb.info["view_dims"][0], slice(emb.info["view_dims"][0], None)
    assert np.allclose(emb.vectors[weights == 0, crop], 0.0)
    assert np.allclose(emb.vectors[weights == 1, crop], ungated.vectors[weights == 1, crop], atol=1e-5)
    assert np.allclose(emb.vectors[:, :ctx_dim], ungated.vectors[:, :ctx_dim], atol=1e-5)
    assert emb.info["crop_share"] == pytest.approx(weights.mean())


def test_crop_gate_and_anomaly_tau_are_validated_before_work() -> None:
    images = testing.example_images()
    maps = testing.example_maps(images)
    for bad in ({"crop_gate": "sometimes"}, {"anomaly_tau": 0.0}):
        with pytest.raises(ValueError):
            MultiViewDescriptor(**{**SMALL, **bad}).fit(images, maps, testing.example_regions(maps))


def test_view_transforms_equalise_views_and_are_learned_in_fit() -> None:
    from anomaly_clustering.plugins.multiview.representation import apply_view_transform, fit_view_transform

    rng = np.random.default_rng(0)
    x, truth = _blobs(3, 30, d=4)
    wide = np.concatenate([x, rng.normal(0, 0.05, (len(x), 200))], 1) * 50.0  # 4 informative dims among 204, large scale
    for how in ("none", "l2", "ssqrt", "ssqrt-l2", "pca"):
        st = fit_view_transform(wide, how, dims=8)
        z = apply_view_transform(wide, st)
        assert np.allclose(z.mean(0), 0.0, atol=1e-8) and np.linalg.norm(z, axis=1).mean() == pytest.approx(1.0)
        assert np.allclose(apply_view_transform(wide[:5], st), z[:5])  # fitted state, not refitted per call
    pca = apply_view_transform(wide, fit_view_transform(wide, "pca", dims=3))
    assert pca.shape == (len(x), 3)
    assert normalized_mutual_info_score(truth, AgglomerativeClustering(3, linkage="ward").fit_predict(pca)) == pytest.approx(1.0)
    white = apply_view_transform(wide, fit_view_transform(wide, "pca", dims=3, whiten=True))
    assert np.allclose(np.std(white, axis=0), np.std(white, axis=0)[0], rtol=1e-6)  # whitened: equal spread per component
    ssq = apply_view_transform(np.array([[4.0], [-4.0], [0.0]]), fit_view_transform(np.array([[4.0], [-4.0], [0.0]]), "ssqrt"))
    assert ssq[0, 0] == pytest.approx(-ssq[1, 0]) and ssq[2, 0] == pytest.approx(0.0)
    v = np.array([1.0, -4.0, 9.0, 0.25])
    u = np.array([2.0, 1.0, -3.0, 0.5])
    scaled = np.stack([v, 4.0 * v, -5.0 * v, u, -u])  # centred already; rows 0 and 1: one direction, two strengths
    power = apply_view_transform(scaled, fit_view_transform(scaled, "ssqrt-l2"))
    root = apply_view_transform(scaled, fit_view_transform(scaled, "ssqrt"))
    assert np.allclose(power[0], power[1]) and not np.allclose(root[0], root[1])  # the strength is gone, the direction kept
    assert not np.allclose(power[0], power[2]) and not np.allclose(power[0], power[3])


def test_representation_pca_view_transform_sets_each_views_width(tmp_path) -> None:
    images = testing.example_images()
    maps = testing.example_maps(images)
    regions = testing.example_regions(maps)
    with runtime.settings(cache_dir=str(tmp_path), quiet=True):
        est = MultiViewDescriptor(view_transform="pca", view_dims=3, **SMALL)
        emb = est.fit_transform(images, maps, regions)
        again = est.transform(images, maps, regions)
    assert emb.info["view_dims"] == [3, 3] and emb.vectors.shape == (len(images), 6)
    assert np.allclose(emb.vectors, again.vectors, atol=1e-5)
    for bad in ({"view_transform": "zca"}, {"view_dims": 0}, {"view_dims": 2.5}):
        with pytest.raises(ValueError):
            MultiViewDescriptor(**{**SMALL, **bad}).fit(images, maps, regions)


def test_reassign_normal_gives_missed_defects_back_to_their_type_and_predict_does_the_same() -> None:
    rng = np.random.default_rng(8)
    centres = np.zeros((3, 8))
    centres[:, :4] = rng.normal(0, 4, (3, 4))
    types = np.repeat(np.arange(3), 20)
    x = np.concatenate([centres[types] + rng.normal(0, 0.3, (60, 8)), rng.normal(0, 0.3, (100, 8))])
    x = np.concatenate([x, np.zeros((160, 3))], 1)  # a gated view: carried only by images with a region
    has_region = np.r_[np.ones(60, bool), np.zeros(100, bool)]
    has_region[[0, 20, 40]] = False  # one defect of each type missed by the binarizer
    x[~has_region, 8:] = 0.0
    x[has_region, 8:] = rng.normal(0, 5, (int(has_region.sum()), 3))  # and that view is loud for the rest
    emb = Embeddings.per_image(x.astype(np.float32), {"has_region": has_region.tolist()})
    plain = NormalFirstClusterer(n_clusters=4, normal_by="region", structure_check=False).fit_predict(emb)
    assert plain.labels[[0, 20, 40]].tolist() == [3, 3, 3]
    model = NormalFirstClusterer(n_clusters=4, normal_by="region", structure_check=False, reassign_normal=True)
    res = model.fit_predict(emb)
    assert res.info["normal_reassigned"] == 3 and model.shared_columns_.tolist() == [True] * 8 + [False] * 3
    assert [res.labels[i] for i in (0, 20, 40)] == [res.labels[1], res.labels[21], res.labels[41]]
    assert np.all(res.labels[60:] == 3)  # the good images stay together
    pred = model.predict(Embeddings.per_image(x[[1, 21, 100]].astype(np.float32) * [[1] * 8 + [0] * 3], {"has_region": [False] * 3}))
    assert pred.labels.tolist() == [res.labels[1], res.labels[21], 3]
    with pytest.raises(ValueError, match="reassign_normal"):
        NormalFirstClusterer(n_clusters=4, normal_by="region", reassign_normal="yes").fit_predict(emb)
