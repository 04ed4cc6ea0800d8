"""Combined localizer (``fca-mutual``): merge rules on tensors; on generated OBJECT sets the merged map peaks on the
defect where FCA+VAE's own map peaks on the object's outline (striped leaves whose pose varies, at 128 px with a short
VAE schedule: at the default 512 px FCA+VAE finds these spots too, benchmarks/leaf_localization.py), and the
defect-free images get empty masks (a disc on a plain background)."""

import pickle

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from anomaly_clustering import registry
from anomaly_clustering.plugins.combined import CombinedLocalizer
from anomaly_clustering.features_ops import topk_mean
from anomaly_clustering.plugins.combined.torch_model import merge, resize_maps, robust_scale
from anomaly_clustering.testing import check_localizer, leaf_images, object_images

SIZE = 96
FAST = {"fca-vae": {"input_size": SIZE, "vae_iterations": 200}, "mutual": {"input_size": SIZE, "reference_images": 12}}


def test_merge_rules():
    a = torch.tensor([[[3.0, -1.0], [2.0, 0.0]]])
    b = torch.tensor([[[3.0, 5.0], [8.0, 1.0]]])
    geo = merge([a, b], "geometric")
    assert torch.allclose(geo, torch.tensor([[[3.0, 0.0], [4.0, 0.0]]]))  # √(3·3), a ≤ 0 → 0, √(2·8), a = 0 → 0
    assert torch.allclose(merge([a, b], "mean"), (a + b) / 2)
    assert torch.allclose(merge([a, b], "min"), torch.tensor([[[3.0, 0.0], [2.0, 0.0]]]))
    assert torch.equal(merge([b], "geometric"), b)  # one member: its own excess
    with pytest.raises(ValueError, match="rule"):
        merge([a], "max")


def test_scale_resize_and_top_mean():
    maps = torch.arange(16.0).view(1, 4, 4)
    med, mad = robust_scale(maps)
    assert med == 7.0 and mad == 4.0
    assert robust_scale(torch.ones(2, 3, 3)) == (1.0, 1.0)  # flat: MAD 1, never a division by 0
    assert resize_maps(maps, (8, 8)).shape == (1, 8, 8) and resize_maps(maps, (4, 4)) is maps
    assert torch.equal(topk_mean(maps, 0.0), torch.tensor([15.0])) and torch.equal(topk_mean(maps, 0.25), torch.tensor([13.5]))


@pytest.fixture(scope="module")
def object_run(tmp_path_factory, cpu_cache):
    images, defects, rims = object_images(tmp_path_factory.mktemp("objects"), size=SIZE)
    loc = CombinedLocalizer(member_options=FAST, input_size=SIZE, seed=0)
    return loc, images, loc.fit_predict(images), defects, rims


def _full(maps: np.ndarray, size: int) -> np.ndarray:
    """Maps upsampled (bilinear) to the images' size, where the outline and the defects are drawn."""
    return np.stack([ndimage.zoom(m, size / m.shape[0], order=1) for m in maps])


def _outline_and_peaks(maps: np.ndarray, defects: np.ndarray, rims: np.ndarray) -> tuple[float, int]:
    """Over the defective images: the median of (outline rise / defect rise) above each image's median, and how
    many maps peak on (within 4 px of) the defect."""
    full = _full(maps, defects.shape[1])
    ratios, on = [], 0
    for i in np.flatnonzero(defects.any((1, 2))):
        base = np.median(full[i])
        ratios.append(float((full[i][rims[i]].mean() - base) / (full[i][defects[i]].mean() - base)))
        on += bool(ndimage.binary_dilation(defects[i], iterations=4)[np.unravel_index(np.argmax(full[i]), full[i].shape)])
    return float(np.median(ratios)), on


@pytest.fixture(scope="module")
def leaf_run(tmp_path_factory, cpu_cache):
    images, defects, rims = leaf_images(tmp_path_factory.mktemp("leaves"), n=24, size=128)
    options = {"fca-vae": {"input_size": 128, "vae_iterations": 200}, "mutual": {"input_size": 128, "reference_images": 12}}
    loc = CombinedLocalizer(member_options=options, seed=0)
    merged = loc.fit_predict(images)
    return merged, loc.members_[0].predict(images), defects, rims


def test_on_leaves_the_map_peaks_on_the_defect_not_on_the_outline(leaf_run):
    merged, fca, defects, rims = leaf_run
    assert merged.info["method"] == "fca-mutual" and merged.info["rule"] == "mean"
    (ratio, on), (fca_ratio, fca_on) = _outline_and_peaks(merged.maps, defects, rims), _outline_and_peaks(fca.maps, defects, rims)
    n = int(defects.any((1, 2)).sum())
    assert fca_on <= n // 2, "the set must show FCA+VAE's failure: its maps peak on the outline"
    assert on >= 0.75 * n and on >= fca_on + n // 3, (on, fca_on)
    assert ratio < 0.5 * fca_ratio, (ratio, fca_ratio)
    bad = defects.any((1, 2))
    assert roc_auc_score(bad, merged.scores) > roc_auc_score(bad, fca.scores)


def test_on_discs_the_map_peaks_on_the_defect_and_good_images_get_empty_masks(object_run):
    _, images, maps, defects, rims = object_run
    ratio, on = _outline_and_peaks(maps.maps, defects, rims)
    assert on == int(defects.any((1, 2)).sum()) and ratio < 0.25
    regions = registry.create("binarizer", "hysteresis").fit_transform(maps, images)
    has = regions.masks.any((1, 2))
    bad = defects.any((1, 2))
    assert (~has[~bad]).mean() >= 0.8 and has[bad].mean() >= 0.75


def test_new_images_use_the_learned_scales_and_pickle(object_run, tmp_path):
    loc, _, _, _, _ = object_run
    scales = loc.scales_
    new, defects, _ = object_images(tmp_path / "new", n=4, defect_every=2, size=SIZE, seed=5)
    out = pickle.loads(pickle.dumps(loc)).predict(new)
    assert loc.scales_ == scales and out.info["scales"] == [list(s) for s in scales]
    assert roc_auc_score(defects.any((1, 2)), out.scores) == 1.0


def test_options_reach_the_members(object_run):
    loc = CombinedLocalizer(backbone="tf_efficientnet_lite0", input_size=256, seed=3)
    fca, mutual = loc._build()
    assert (fca.input_size, fca.seed, mutual.input_size, mutual.seed) == (256, 3, 128, 3)  # mutual keeps its 128 px
    fca, mutual = CombinedLocalizer(input_size=64, member_options={"mutual": {"reference_images": 5}})._build()
    assert (fca.input_size, mutual.input_size, mutual.reference_images) == (64, 64, 5)


@pytest.mark.parametrize("bad, match", [
    ({"rule": "max"}, "rule"), ({"members": ()}, "members"), ({"members": ("fca", "fca")}, "members"),
    ({"members": ("fca", "fca-mutual")}, "own member"), ({"top_fraction": 1.5}, "top_fraction"),
    ({"member_options": {"musc": {}}}, "not members"),
])
def test_parameters_are_validated_before_work(bad, match, object_run):
    _, images, _, _, _ = object_run
    with pytest.raises(ValueError, match=match):
        CombinedLocalizer(**bad).fit(images)
    with pytest.raises(Exception, match="fit"):
        CombinedLocalizer().predict(images)


def test_an_unknown_member_is_named(object_run):
    _, images, _, _, _ = object_run
    with pytest.raises(Exception, match="no-such-localizer"):
        CombinedLocalizer(members=("fca", "no-such-localizer")).fit(images)


def test_conformance(cpu_cache):
    check_localizer(CombinedLocalizer, input_size=64, member_options={"fca-vae": {"vae_iterations": 20}, "mutual": {"reference_images": 4}})


# -- fca-nearest: FCA+VAE beside the nearest patch of other images -------------------------------------------------
def _pad_images(folder, n=16, size=128, seed=0):
    """Every image has one dark square pad at a random place (rare inside the image, common in the set: what FCA
    lights up on a circuit board); every second image also has a small bright spot (the defect). Returns the set and
    which images are defective."""
    from PIL import Image

    from anomaly_clustering.data import load_image_set

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    bad = np.arange(n) % 2 == 0
    for i in range(n):
        img = 0.6 + rng.normal(0, 0.01, (size, size))
        py, px = 16 * rng.integers(1, size // 16 - 2, 2)  # on the 16 px grid, as a board's pads and traces repeat
        img[py : py + 16, px : px + 16] = 0.15
        if bad[i]:
            while True:
                cy, cx = rng.integers(12, size - 12, 2)
                if abs(cy - py - 8) > 20 or abs(cx - px - 8) > 20:
                    break
            img = np.where(np.hypot(yy - cy, xx - cx) < 5, 0.95, img)
        rgb = np.clip(np.repeat(img[..., None], 3, axis=2), 0, 1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return load_image_set(folder), bad


def test_fca_nearest_ranks_images_where_fca_lights_up_a_structure_every_image_has(cpu_cache, tmp_path):
    from anomaly_clustering.plugins.combined import FCANearestLocalizer

    images, bad = _pad_images(tmp_path / "pads")
    loc = FCANearestLocalizer(input_size=128, member_options={"fca-vae": {"vae_iterations": 200},
                                                            "mutual": {"degrees": (1,), "pool": 2, "normalize": "l2", "quantile": 1e-6,
                                                                       "sigma": 0.0, "map_size": 16, "reference_images": 8}}, seed=0)
    merged = loc.fit_predict(images)
    fca = loc.members_[0].predict(images)
    assert merged.info["method"] == "fca-nearest" and merged.maps.shape == fca.maps.shape
    assert roc_auc_score(bad, fca.scores) < 0.8, "the set must show FCA's failure: the pad is as bright as the spot"
    assert roc_auc_score(bad, merged.scores) >= 0.95 and np.allclose(merged.scores, merged.maps.reshape(len(bad), -1).max(1))


def test_fca_nearest_members_share_the_features_and_fca_mutual_is_unchanged():
    from anomaly_clustering.plugins.combined import FCANearestLocalizer

    fca, nearest = FCANearestLocalizer(seed=2)._build()
    assert (nearest.input_size, nearest.pool, nearest.normalize, nearest.degrees, nearest.reference_images) == (512, 2, "l2", (1,), 64)
    assert nearest._spec() == fca._spec() and nearest.seed == 2  # one backbone pass, one feature cache for both
    assert registry.get_plugin("localizer", "fca-nearest") is FCANearestLocalizer
    assert CombinedLocalizer()._build()[1].input_size == 128 and CombinedLocalizer().top_fraction == 0.01
    with pytest.raises(ValueError, match="own member"):
        CombinedLocalizer(members=("fca", "fca-nearest"))._validate()


def test_any_combined_subclass_is_refused_as_a_member(monkeypatch):
    """Not a list of names: a third party's subclass, registered under any name, cannot be a member either."""

    class ThirdPartyCombined(CombinedLocalizer):
        pass

    real = registry.get_plugin
    monkeypatch.setattr(registry, "get_plugin", lambda kind, name: ThirdPartyCombined if name == "their-merge" else real(kind, name))
    with pytest.raises(ValueError, match="own member"):
        CombinedLocalizer(members=("fca", "their-merge"))._validate()
    CombinedLocalizer(members=("fca", "mutual"))._validate()  # ordinary members pass


def test_the_members_code_is_part_of_the_combined_stage_key(monkeypatch):
    """``combined`` builds its members by name: an edit of a member's code must change the combined stage's key."""
    from anomaly_clustering import pipeline

    loc = CombinedLocalizer(members=("fca", "mutual"))
    before = pipeline.stage_identity("localizer", "fca-mutual", loc)
    assert [m["name"] for m in before["composed"]] == ["fca", "mutual"]
    real = pipeline.source_digest
    monkeypatch.setattr(pipeline, "source_digest", lambda module: "edited" if "mutual" in module else real(module))
    after = pipeline.stage_identity("localizer", "fca-mutual", loc)
    assert after != before and after["source"] == before["source"], "only the member's part of the key moves"
