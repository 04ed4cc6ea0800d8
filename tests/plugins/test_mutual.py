"""Mutual localizer and its gated binarizer on a generated OBJECT set (a bright disc on a plain background, a
dark defect planted inside the disc of some images): the map peaks on the defect, not on the disc's outline, and the
defect-free images get empty masks."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from anomaly_clustering.data import load_image_set
from anomaly_clustering.plugins.mutual import MutualLocalizer, HysteresisThreshold
from anomaly_clustering.plugins.mutual.search import NearestPatchIndex, default_nlist
from anomaly_clustering.plugins.mutual.torch_model import aggregate, image_scores, mutual_scores, normalize_layers, robust_scale, self_scores, topk_mean
from anomaly_clustering.records import AnomalyMaps
from anomaly_clustering.testing import check_binarizer, check_localizer, object_images

SIZE = 96


def _object_set(folder, n=12, defect_every=3, seed=0):
    return object_images(folder, n=n, defect_every=defect_every, size=SIZE, seed=seed)


def _texture_set(folder, n=12, seed=0):
    """A striped texture (random phase) where EVERY image has the same kind of defect, a bright spot at a random
    place: mutual scoring finds the spot in the other images too; within-image evidence does not."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    masks = []
    for i in range(n):
        img = 0.5 + 0.2 * np.sin(2 * np.pi * xx / 8 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.03, (SIZE, SIZE))
        cy, cx = rng.uniform(20, SIZE - 20, 2)
        mask = np.hypot(yy - cy, xx - cx) < 9
        rgb = np.clip(np.repeat(np.where(mask, 0.9, img)[..., None], 3, axis=2), 0, 1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        masks.append(mask)
    return load_image_set(folder), np.stack(masks)


@pytest.fixture(scope="module")
def object_run(tmp_path_factory, cpu_cache):
    images, defects, rims = _object_set(tmp_path_factory.mktemp("objects"))
    loc = MutualLocalizer(input_size=SIZE, reference_images=12, seed=0)
    return loc, images, loc.fit_predict(images), defects, rims


def test_mutual_scores_excludes_self_and_is_chunk_invariant():
    torch.manual_seed(0)
    z = torch.randn(5, 16, 8)
    z[2, 7] += 10.0  # a patch no other image has
    s = mutual_scores(z, z, exclude=list(range(5)), quantile=0.5)
    assert s[2].argmax() == 7 and s[2, 7] > 5
    assert mutual_scores(z, z, exclude=None, quantile=0.2)[2, 7] < 1e-3  # without exclusion it matches itself
    assert torch.allclose(mutual_scores(z, z, list(range(5)), 0.5, max_elements=16 * 16), s, atol=1e-4)
    per_ref = torch.stack([torch.cdist(z[0], z[j]).amin(-1) for j in range(1, 5)], -1)  # 16×4
    brute = per_ref.sort(-1).values[:, :2].mean(-1)  # 4 references, quantile 0.5 → 2
    assert torch.allclose(s[0], brute, atol=1e-4)


def test_self_scores_find_what_is_rare_in_its_own_image():
    torch.manual_seed(0)
    z = torch.randn(2, 36, 4) * 0.1  # 6×6 grid
    z[0, 14] += 5.0  # rare in image 0
    z[1, 14] += 5.0
    z[1, 15] += 5.0  # its twin sits next to it: within radius 1 it is not a match
    s = self_scores(z, (6, 6), radius=1, quantile=0.1)
    assert s[0].argmax() == 14 and s[0, 14] > 3 and s[0].median() < 1
    assert s[1, 14] > 3 and self_scores(z, (6, 6), radius=0, quantile=0.01)[1, 14] < 1  # radius 0: the twin matches
    assert torch.allclose(self_scores(z, (6, 6), 1, 0.1, max_elements=36 * 36), s)  # image blocks do not change it
    with pytest.raises(ValueError, match="radius"):
        self_scores(z, (6, 6), radius=6)
    # quantile 1: a centre patch has fewer far patches than a corner one, so its row holds unused (infinite) slots
    assert torch.isfinite(self_scores(z, (6, 6), radius=1, quantile=1.0)).all()
    med, mad = robust_scale(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert (med, mad) == (3.0, 1.0)


def test_normalization_and_aggregation_shapes():
    x = torch.randn(2, 10, 6, 6)
    n = normalize_layers(x, (4, 6))
    assert torch.allclose(n[:, :4].pow(2).sum(1), torch.ones(2, 6, 6), atol=1e-3)  # each layer: unit norm
    assert aggregate(n, (1, 3)).shape == (2, 20, 6, 6)
    with pytest.raises(ValueError):
        normalize_layers(x, (4, 5))
    assert torch.equal(topk_mean(torch.arange(8.0).view(2, 2, 2), 0.0), torch.tensor([3.0, 7.0]))


def test_image_score_discounts_a_map_raised_everywhere():
    yy, xx = np.mgrid[0:32, 0:32]
    busy = np.full((32, 32), 1.0) + 0.2 * ((yy + xx) % 8 == 0)  # raised everywhere, no local defect
    defect = np.full((32, 32), 0.2) + 0.9 * (np.hypot(yy - 16, xx - 16) < 3)  # low level, one local rise
    maps = torch.tensor(np.stack([busy, defect]), dtype=torch.float32)
    assert torch.equal(image_scores(maps, 0.01, 0.0), topk_mean(maps, 0.01))
    assert topk_mean(maps, 0.01)[0] > topk_mean(maps, 0.01)[1]  # the plain top-k mean ranks the busy map first
    s = image_scores(maps, 0.01, 0.5)
    assert s[1] > s[0] and torch.allclose(s, topk_mean(maps, 0.01) - 0.5 * torch.tensor([1.0, 0.2]))


def _bump_maps(n=10, anomalous=(0, 1, 2, 3, 4, 5, 6), side=32, seed=0):
    """Noisy flat maps; the ``anomalous`` ones get a bump of radius 4 at a random place. Returns maps and bump masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    maps = 0.5 + 0.02 * rng.standard_normal((n, side, side))
    bumps = np.zeros((n, side, side), bool)
    for i in anomalous:
        cy, cx = rng.integers(6, side - 6, 2)
        r = np.hypot(yy - cy, xx - cx)
        maps[i] += 0.6 * np.exp(-0.5 * (r / 3.0) ** 2)
        bumps[i] = r < 4
    maps = maps.astype(np.float32)
    scores = image_scores(torch.from_numpy(maps), 0.01, 0.5).numpy()
    return AnomalyMaps(maps, scores, np.full((n, 2), side)), bumps


@pytest.mark.parametrize("anomalous", [(0, 1, 2), (0, 1, 2, 3, 4, 5, 6)])
def test_gate_flags_the_defective_images_whatever_their_share(anomalous):
    maps, bumps = _bump_maps(anomalous=anomalous)
    regions = HysteresisThreshold().fit_transform(maps, None)
    has = regions.masks.any((1, 2))
    assert np.array_equal(has, bumps.any((1, 2))), "exactly the images with a bump get a region (30 % or 70 % of the set)"
    inter = (regions.masks & bumps).sum((1, 2))
    assert (inter[has] / regions.masks[has].sum((1, 2))).min() > 0.9, "each region lies on its bump"
    assert (inter[has] / bumps[has].sum((1, 2))).min() > 0.4, "and covers its core"
    assert np.isinf(regions.thresholds[~has]).all() and np.isfinite(regions.thresholds[has]).all()
    old = HysteresisThreshold(score="top", grow="median-top").fit_transform(maps, None)  # gate on the top-1 % means instead
    assert np.array_equal(old.masks.any((1, 2)), bumps.any((1, 2)))


def test_a_flagged_image_keeps_its_peak_region_when_every_component_is_small():
    maps, bumps = _bump_maps(anomalous=(0, 1, 2))
    arr = np.array(maps.maps)
    arr[3, 20:22, 20:22] += 1.5  # a 2×2 defect: the gate flags it, its region is far under the minimum area
    scores = image_scores(torch.from_numpy(arr), 0.01, 0.5).numpy()
    spiked = AnomalyMaps(arr, scores, np.asarray(maps.image_sizes))
    regions = HysteresisThreshold(min_area_fraction=0.02).fit_transform(spiked, None)  # 20 of the 1 024 pixels
    has = regions.masks.any((1, 2))
    assert has[:4].all() and not has[4:].any(), "every image the gate flags has a region, the others none"
    assert regions.masks[3].sum() == 4 and regions.masks[3, 20:22, 20:22].all(), "the small defect keeps its own small region"
    assert regions.info["peak_regions_kept"] == 1
    assert sorted({r.image_index for r in regions.regions}) == [0, 1, 2, 3]
    assert [r.image_index for r in regions.regions] == sorted(r.image_index for r in regions.regions)
    for i in range(3):  # the bumps' regions are large enough: theirs is the plain rule's, untouched
        assert np.array_equal(regions.masks[i], arr[i] > regions.thresholds[i])
    plain = HysteresisThreshold().fit_transform(spiked, None)  # the default minimum area (1 pixel here): nothing to keep
    assert plain.info["peak_regions_kept"] == 0 and np.array_equal(plain.masks[3], regions.masks[3])


def test_binarizer_parameters_are_validated():
    maps, _ = _bump_maps()
    for bad in ({"gate": "mean"}, {"score": "max"}, {"grow": "all"}, {"peak_fraction": 1.0}, {"k": -1}):
        with pytest.raises(ValueError):
            HysteresisThreshold(**bad).fit(maps)
    with pytest.raises(RuntimeError, match="fit"):
        HysteresisThreshold().transform(maps)


def test_map_peaks_on_the_defect_not_on_the_outline(object_run):
    _, _, maps, defects, rims = object_run
    assert maps.maps.shape == (12, SIZE // 2, SIZE // 2) and maps.info["mode"] == "mutual"
    small = lambda m: np.stack([ndimage.zoom(x.astype(float), 0.5, order=1) > 0.5 for x in m])  # noqa: E731
    d, rim = small(defects), small(rims)
    for i in np.flatnonzero(defects.any((1, 2))):
        peak = np.unravel_index(np.argmax(maps.maps[i]), maps.maps[i].shape)
        assert ndimage.binary_dilation(d[i], iterations=3)[peak], f"image {i}: peak {peak} is off the defect"
        base = np.median(maps.maps[i])  # the normal level of this image
        defect_rise, rim_rise = maps.maps[i][d[i]].mean() - base, maps.maps[i][rim[i]].mean() - base
        assert rim_rise < 0.25 * defect_rise, f"image {i}: the outline rises {rim_rise:.3f}, the defect {defect_rise:.3f}"
    assert roc_auc_score(d.ravel(), maps.maps.ravel()) > 0.95
    assert roc_auc_score(defects.any((1, 2)), maps.scores) == 1.0


def test_good_images_get_empty_masks(object_run):
    _, images, maps, defects, _ = object_run
    regions = HysteresisThreshold().fit_transform(maps, images)
    has = regions.masks.any((1, 2))
    anomalous = defects.any((1, 2))
    assert (~has[~anomalous]).mean() >= 0.8, "most defect-free object images must keep an empty mask"
    assert has[anomalous].mean() >= 0.75
    small = np.stack([ndimage.zoom(x.astype(float), 0.5, order=1) > 0.5 for x in defects])
    for i in np.flatnonzero(has):  # every region found covers its defect, not the object
        assert (regions.masks[i] & small[i]).sum() >= 0.5 * small[i].sum() and regions.masks[i].mean() < 0.15


def test_new_images_and_pickle(object_run, tmp_path):
    loc, _, _, _, _ = object_run
    assert loc.reference_.dtype == torch.float16 and len(pickle.dumps(loc)) < 2_000_000
    new, defects, _ = _object_set(tmp_path / "new", n=4, defect_every=2, seed=5)
    out = loc.predict(new)
    assert roc_auc_score(defects.any((1, 2)), out.scores) == 1.0


def test_parameters_are_validated_before_work(object_run):
    _, images, _, _, _ = object_run
    with pytest.raises(ValueError, match="quantile"):
        MutualLocalizer(quantile=0).fit(images)
    with pytest.raises(ValueError, match="degrees"):
        MutualLocalizer(degrees=(2,)).fit(images)
    with pytest.raises(ValueError, match="median_weight"):
        MutualLocalizer(median_weight=1.5).fit(images)
    for bad, name in (({"self_weight": -0.1}, "self_weight"), ({"self_radius": -1}, "self_radius"), ({"self_radius": 1.5}, "self_radius"),
                      ({"self_quantile": 0}, "self_quantile")):
        with pytest.raises(ValueError, match=name):
            MutualLocalizer(**bad).fit(images)
    with pytest.raises(RuntimeError, match="fit"):
        MutualLocalizer().predict(images)


def test_within_image_evidence_finds_a_defect_every_image_has(cpu_cache, tmp_path):
    images, masks = _texture_set(tmp_path / "texture")
    small = np.stack([ndimage.zoom(x.astype(float), 0.5, order=1) > 0.5 for x in masks]).ravel()
    auroc = {}
    for w in (0.0, 0.5):
        loc = MutualLocalizer(input_size=SIZE, reference_images=12, seed=0, self_weight=w)
        auroc[w] = roc_auc_score(small, loc.fit_predict(images).maps.ravel())
    assert auroc[0.5] > auroc[0.0] + 0.02 and auroc[0.5] > 0.98, auroc
    alone = MutualLocalizer(input_size=SIZE, reference_images=1, self_weight=1.0).fit_predict(images)  # no mutual term
    assert np.isfinite(alone.maps).all() and roc_auc_score(small, alone.maps.ravel()) > 0.98
    (m_med, m_mad), (s_med, s_mad) = loc.scales_
    assert m_mad > 0 and s_mad > 0 and s_med > 0
    with pytest.raises(RuntimeError, match="fit again"):
        MutualLocalizer(input_size=SIZE, reference_images=12).fit(images).set_params(self_weight=0.5).predict(images)


def test_within_image_evidence_keeps_the_object_defects(object_run):
    """On objects the within-image score lights up the outline; at a quarter weight the defects still lead."""
    loc, images, _, defects, _ = object_run
    out = MutualLocalizer(**{**loc.get_params(), "self_weight": 0.25}).fit_predict(images)
    small = np.stack([ndimage.zoom(x.astype(float), 0.5, order=1) > 0.5 for x in defects])
    assert roc_auc_score(small.ravel(), out.maps.ravel()) > 0.95
    assert roc_auc_score(defects.any((1, 2)), out.scores) == 1.0
    assert out.info["self_weight"] == 0.25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks the GPU path gives the CPU's maps")
def test_cuda_matches_cpu(object_run):
    loc, images, maps, _, _ = object_run
    gpu = MutualLocalizer(**{**loc.get_params(), "device": "cuda"}).fit_predict(images)
    assert gpu.info["device"].startswith("cuda")
    np.testing.assert_allclose(gpu.maps, maps.maps, rtol=1e-3, atol=1e-3)


def test_conformance(cpu_cache):
    check_localizer(MutualLocalizer, input_size=64, reference_images=4)
    check_localizer(MutualLocalizer, input_size=64, reference_images=4, self_weight=0.5)
    check_binarizer(HysteresisThreshold)


def test_pooled_unit_length_patches(object_run):
    """``pool`` averages the feature grid before scoring (a quarter of the patches at 2), ``normalize="l2"`` puts
    every patch on the unit sphere (cosine distances, as ``fca-nearest`` compares FCA's features)."""
    _, images, _, _, _ = object_run
    loc = MutualLocalizer(input_size=SIZE, reference_images=6, pool=2, normalize="l2", degrees=(1,), quantile=1e-6, seed=0).fit(images)
    full = MutualLocalizer(input_size=SIZE, reference_images=6, seed=0).fit(images)
    assert loc.grid_ == tuple(v // 2 for v in full.grid_)
    norms = loc.reference_.float().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-2)
    out = loc.predict(images)
    assert out.maps.shape[1:] == full.predict(images).maps.shape[1:] and np.isfinite(out.maps).all()
    for bad, name in (({"pool": 0}, "pool"), ({"pool": 1.5}, "pool"), ({"pool": True}, "pool"), ({"normalize": "z"}, "normalize")):
        with pytest.raises(ValueError, match=name):
            MutualLocalizer(**bad).fit(images)


def test_index_search_is_the_exact_nearest_patch():
    """With every cell probed the IVF index returns the exact nearest distance, own image left out; with few cells
    probed it never returns less than the exact one (it only misses candidates)."""
    torch.manual_seed(0)
    ref = torch.randn(6, 80, 8)
    queries = torch.cat([ref[:2], torch.randn(3, 80, 8)])  # two of the references, three new images
    exclude = [0, 1, -1, -1, -1]
    exact = mutual_scores(queries, ref, exclude, quantile=1e-6)
    index = NearestPatchIndex(ref, nlist=12, nprobe=12, seed=0)
    assert torch.allclose(index.distances(queries, exclude), exact, atol=1e-4)
    assert index.distances(queries[:1], None)[0].max() < 1e-3  # without exclusion a reference matches itself
    coarse = NearestPatchIndex(ref, nlist=12, nprobe=1, seed=0).distances(queries, exclude)
    assert (coarse >= exact - 1e-4).all() and torch.isfinite(coarse).all()
    assert default_nlist(65536) == 1024 and default_nlist(100) == 2 and default_nlist(10) == 1


def test_ivf_search_gives_the_exact_maps(object_run):
    """``search="ivf"`` (single-nearest score) with every cell probed gives the exact search's maps; it refuses the
    interval average it cannot compute and bad index sizes, before work."""
    _, images, _, _, _ = object_run
    opts = dict(input_size=SIZE, reference_images=6, pool=2, normalize="l2", degrees=(1,), quantile=1e-6, sigma=0.0, seed=0)
    exact = MutualLocalizer(**opts).fit_predict(images)
    fast = MutualLocalizer(**opts, search="ivf", nlist=4, nprobe=4).fit_predict(images)
    np.testing.assert_allclose(fast.maps, exact.maps, rtol=1e-3, atol=1e-3)
    assert fast.info["search"] == "ivf" and exact.info["search"] == "exact"
    for bad, name in (({"search": "ivf"}, "quantile"), ({"search": "hnsw"}, "search"), ({"nprobe": 0}, "nprobe"),
                      ({"nlist": -1}, "nlist"), ({"nlist": 2.5}, "nlist"), ({"nprobe": True}, "nprobe")):
        with pytest.raises(ValueError, match=name):
            MutualLocalizer(**bad).fit(images)
