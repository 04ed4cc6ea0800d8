"""FCA and FCA+VAE localizers: the fast FCA equals a direct per-position computation, a periodic texture gives a
flat map, and on generated textures with planted defects both localizers' maps peak on the defects."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from anomaly_clustering import runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.records import AnomalyMaps
from anomaly_clustering.examples import make_texture, plant_defect
from anomaly_clustering.features_ops import gaussian_blur
from anomaly_clustering.plugins.blind_lca.localizer import (
    ENSEMBLE_SEED_STRIDE,
    FCALocalizer,
    FCAVAECalibratedLocalizer,
    FCAVAEFrameLocalizer,
    FCAVAELocalizer,
    train_vae,
)
from anomaly_clustering.validation import ValidationError
from anomaly_clustering.plugins.blind_lca.torch_model import FCAParams, FeatureVAE, VAEEnsemble, fca_map, reference_distribution

SIZE = 128  # image side; lite0 features at stride 8 → 16×16 maps


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: two OpenMP threads on a shared, oversubscribed CPU are several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def direct_fca(x: torch.Tensor, p: int = 7, sigma_p: float = 3.0, sigma_s: float = 1.0) -> torch.Tensor:
    """FCA before post-processing, one position and one channel at a time (tiny inputs only)."""
    c, h, w = x.shape
    r = p // 2
    ref = reference_distribution(x, p)
    k = torch.exp(-0.5 * ((torch.arange(p) - r) / sigma_p) ** 2)
    weight = torch.outer(k, k) / torch.outer(k, k).sum()
    xp = F.pad(x[None], (r, r, r, r), mode="reflect")[0]
    acc = torch.zeros(h + 2 * r, w + 2 * r)
    for i in range(h):
        for j in range(w):
            contrib = torch.zeros(p * p)
            for ch in range(c):
                v = xp[ch, i : i + p, j : j + p].reshape(-1)
                order = torch.sort(v, stable=True).indices
                contrib[order] += (v[order] - ref[ch]).abs()
            patch = gaussian_blur((contrib / c).view(1, 1, p, p), sigma_s)[0, 0]
            acc[i : i + p, j : j + p] += patch * weight
    return acc[r : r + h, r : r + w]


def test_fast_fca_equals_direct_computation():
    x = torch.rand(3, 11, 13)
    fast = fca_map(x, FCAParams(chunk_elements=300), postprocess_map=False)  # several chunks
    assert torch.allclose(fast, direct_fca(x), atol=1e-6)
    # ties (e.g. ReLU zeros) are broken by cell order, as a stable sort does
    x[:, :4] = 0
    assert torch.allclose(fca_map(x, postprocess_map=False), direct_fca(x), atol=1e-6)


def test_reference_distribution_is_tile_median_of_sorted_values():
    x = torch.arange(2 * 14 * 14, dtype=torch.float32).view(2, 14, 14)
    ref = reference_distribution(x)
    tiles = [x[:, i : i + 7, j : j + 7].reshape(2, -1).sort(1).values for i in (0, 7) for j in (0, 7)]
    assert torch.allclose(ref, torch.quantile(torch.stack(tiles), 0.5, dim=0))  # 4 tiles: interpolated median
    assert ref.shape == (2, 49) and torch.all(ref[:, 1:] >= ref[:, :-1])


def test_periodic_texture_gives_near_uniform_map_and_a_defect_stands_out():
    yy, xx = torch.meshgrid(torch.arange(42.0), torch.arange(42.0), indexing="ij")
    x = torch.stack([torch.sin(2 * np.pi * xx / 7), torch.cos(2 * np.pi * yy / 7), torch.sin(2 * np.pi * (xx + yy) / 7)])
    x = (x + 1) / 2
    # away from the reflect-padded edges (patch radius 3, overlap radius 3, post-blur radius 2) every patch holds
    # whole periods, so every sorted patch equals the reference
    flat = fca_map(x)[8:-8, 8:-8]
    assert float(flat.max()) < 1e-5
    x[:, 20:23, 18:21] = 1.0
    amap = fca_map(x)
    peak = np.unravel_index(int(amap.argmax()), amap.shape)
    assert abs(peak[0] - 21) <= 2 and abs(peak[1] - 19) <= 2
    assert float(amap.max()) > 1e-3


def test_border_is_zeroed():
    amap = fca_map(torch.rand(2, 20, 20))
    assert torch.all(amap[:5] == 0) and torch.all(amap[:, -5:] == 0) and float(amap[5:-5, 5:-5].min()) > 0


def test_vae_decodes_mu_without_sampling():
    torch.manual_seed(0)
    vae = FeatureVAE(8, latent=4).eval()
    x = torch.rand(2, 8, 5, 5)
    a, b = vae.reconstruct_maps(x), vae.reconstruct_maps(x)
    assert a.shape == x.shape and torch.equal(a, b) and torch.all(a >= 0)
    assert vae.loss(x.permute(0, 2, 3, 1).reshape(-1, 8)).item() > 0


def test_vae_training_lowers_the_loss_and_repeats_under_its_seed():
    """``train_vae`` runs the shared loop: one loss per iteration, a falling loss, the same weights for the same seed."""
    pool = torch.rand(512, 8) * torch.linspace(0.2, 1.0, 8)  # pixel vectors with some structure to learn

    def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
        return pool[torch.randint(len(pool), (batch,), generator=gen)]

    with runtime.settings(quiet=True, device="cpu"):
        runs = [train_vae(sample, 8, 60, 64, lr=1e-2, latent=4, seed=s) for s in (1, 1, 2)]
    (vae, losses), (again, losses_again), (other, losses_other) = runs
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert losses == losses_again and losses != losses_other
    assert all(torch.equal(p, q) for p, q in zip(vae.state_dict().values(), again.state_dict().values()))
    assert not vae.training and next(vae.parameters()).device.type == "cpu"


@pytest.fixture(scope="module")
def defect_set(tmp_path_factory):
    """8 generated textures with one planted defect each and 2 defect-free ones (masks at 16×16 map resolution)."""
    return write_textures(tmp_path_factory.mktemp("fca_textures"), seed=7)


def write_textures(root, seed: int, mark: bool = False):
    """10 generated textures, 8 with a planted defect (and, with ``mark``, the same bright square at one place in
    every image): the image set and the defects' masks at the 16×16 map resolution."""
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(10):
        img = make_texture(rng, SIZE)
        if mark:
            img[12:28, 12:28] = 0.95
        mask = np.zeros((SIZE, SIZE), bool)
        if i < 8:
            img, mask = plant_defect(img, ("scratch", "hole", "stain")[i % 3], rng)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"{i:02d}.png")
        masks.append(np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((16, 16), Image.BOX)) > 64)
    return load_image_set(root), np.stack(masks)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    inner = np.zeros_like(masks)
    inner[:, 5:-5, 5:-5] = True  # the zeroed border carries no information
    return roc_auc_score(masks[inner], maps[inner])


@pytest.mark.parametrize("cls, extra", [(FCALocalizer, {}), (FCAVAELocalizer, {"vae_iterations": 100, "vae_batch_pixels": 256})])
def test_localizers_peak_on_planted_defects(defect_set, cls, extra):
    images, masks = defect_set
    with runtime.settings(quiet=True):
        loc = cls(input_size=SIZE, **extra)
        out = loc.fit_predict(images)
    assert out.maps.shape == (10, 16, 16) and np.allclose(out.scores, out.maps.reshape(10, -1).max(1))
    assert tuple(out.image_sizes[0]) == (SIZE, SIZE)
    assert pixel_auroc(out.maps, masks) > 0.9
    if cls is FCAVAELocalizer:
        assert out.info["vae_loss"][1] < out.info["vae_loss"][0]  # training reduced the loss
        again = pickle.loads(pickle.dumps(loc)).predict(images.subset([0, 9]))  # pickled state predicts new sets
        assert np.allclose(again.maps, out.maps[[0, 9]], atol=1e-5)


# -- VAE ensemble -------------------------------------------------------------------------------------------------------
def test_vae_ensemble_reconstructs_the_mean_of_its_members():
    torch.manual_seed(0)
    members = [FeatureVAE(8, latent=4).eval() for _ in range(3)]
    x = torch.rand(2, 8, 5, 5)
    mean = torch.stack([m.reconstruct_maps(x) for m in members]).mean(0)
    assert torch.allclose(VAEEnsemble(members).reconstruct_maps(x), mean, atol=1e-6)
    with pytest.raises(ValueError, match="member"):
        VAEEnsemble([])


def test_fca_vae_ensemble_trains_members_from_distinct_seeds(defect_set):
    """``vae_ensemble=2``: two VAEs on the same pixel pool, the first the single VAE of the same seed, the second
    trained from seed + stride (as its own single VAE would be, bar the pool); the maps change, and predict on the
    pickled model repeats them."""
    images, masks = defect_set
    opts = {"input_size": SIZE, "vae_iterations": 60, "vae_batch_pixels": 256, "seed": 3}
    with runtime.settings(quiet=True):
        single = FCAVAELocalizer(**opts)
        one = single.fit_predict(images)
        ens = FCAVAELocalizer(**opts, vae_ensemble=2)
        two = ens.fit_predict(images)
    assert isinstance(single.vae_, FeatureVAE) and isinstance(ens.vae_, VAEEnsemble) and len(ens.vae_.members) == 2

    def same(a: FeatureVAE, b: FeatureVAE) -> bool:
        return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))

    assert same(ens.vae_.members[0], single.vae_) and not same(ens.vae_.members[1], single.vae_)
    assert ENSEMBLE_SEED_STRIDE > 1000  # benchmark seeds 0, 1, 2, … share no member
    assert not np.allclose(one.maps, two.maps) and pixel_auroc(two.maps, masks) > 0.9
    with runtime.settings(quiet=True):
        again = pickle.loads(pickle.dumps(ens)).predict(images.subset([0, 9]))
    assert np.allclose(again.maps, two.maps[[0, 9]], atol=1e-5)


@pytest.mark.parametrize("value", [0, 1.5, None])
def test_bad_vae_ensemble_is_refused_before_work(defect_set, value):
    with pytest.raises(ValidationError, match="vae_ensemble"):
        FCAVAELocalizer(input_size=SIZE, vae_ensemble=value).fit(defect_set[0])


# -- position calibration (fca-vae-calibrated) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def marked_set(tmp_path_factory):
    """10 generated textures that all carry the same bright mark at one place (a fixture, a logo), 8 of them with a
    planted defect elsewhere (masks at the 16×16 map resolution)."""
    return write_textures(tmp_path_factory.mktemp("fca_marked"), seed=11, mark=True)


def test_position_calibration_subtracts_the_sets_median_map(marked_set):
    images, _ = marked_set
    with runtime.settings(quiet=True):
        raw = FCALocalizer(input_size=SIZE, border=0).fit_predict(images).maps
        loc = FCALocalizer(input_size=SIZE, border=0, position_calibration="median")
        out = loc.fit_predict(images)
    median = np.median(raw, axis=0)
    assert np.allclose(loc.position_median_, median, atol=1e-6)
    assert np.allclose(out.maps, raw - median[None], atol=1e-6)
    assert np.allclose(out.scores, out.maps.reshape(len(out.maps), -1).max(1))
    assert out.info["position_calibration"] == "median"
    with runtime.settings(quiet=True):
        new = loc.predict(images.subset([0, 9]))  # new images: the median learned in fit, not their own
        refit = FCALocalizer(input_size=SIZE, border=0, position_calibration="median").fit(images).predict(images)
    assert np.allclose(new.maps, raw[[0, 9]] - median[None], atol=1e-6)
    assert np.allclose(refit.maps, out.maps, atol=1e-6)


def test_position_calibration_removes_what_every_image_shares(marked_set):
    """The shared mark is rare inside each image, so FCA scores it; calibrated, the defects rank first."""
    images, masks = marked_set
    with runtime.settings(quiet=True):
        raw = FCALocalizer(input_size=SIZE, border=0).fit_predict(images).maps
        cal = FCALocalizer(input_size=SIZE, border=0, position_calibration="median").fit_predict(images).maps
    mark = np.zeros((16, 16), bool)
    mark[1:4, 1:4] = True
    assert raw[:, mark].mean() > np.median(raw)  # FCA lights the mark up in every image
    all_pixels = np.ones_like(masks)
    assert roc_auc_score(masks[all_pixels], cal[all_pixels]) > roc_auc_score(masks[all_pixels], raw[all_pixels]) + 0.02
    grown = np.stack([ndimage_dilate(m) for m in masks[:8]]).reshape(8, -1)
    on_defect = {name: grown[np.arange(8), m[:8].reshape(8, -1).argmax(1)].mean() for name, m in (("raw", raw), ("cal", cal))}
    assert on_defect["cal"] >= 0.75 and on_defect["cal"] > on_defect["raw"]  # measured: 1.0 against 0.5


def ndimage_dilate(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=1)


@pytest.mark.parametrize("options", [{"position_calibration": "mean"}, {"position_calibration": None}, {"border": -1}])
def test_bad_calibration_options_are_refused_before_work(marked_set, options):
    images, _ = marked_set
    with pytest.raises(ValidationError, match=next(iter(options))):
        FCALocalizer(input_size=SIZE, **options).fit_predict(images)


def test_calibrated_predict_needs_fit_and_the_same_grid(marked_set):
    images, _ = marked_set
    loc = FCALocalizer(input_size=SIZE, border=0, position_calibration="median")
    with runtime.settings(quiet=True):
        with pytest.raises(NotFittedError):
            loc.predict(images.subset([0]))
        loc.fit(images)
        loc.set_params(input_size=SIZE // 2)
        with pytest.raises(ValueError, match="grid"):
            loc.predict(images.subset([0]))


def test_calibrated_preset_is_fca_vae_with_other_defaults():
    cal, paper = FCAVAECalibratedLocalizer(), FCAVAELocalizer()
    assert (cal.border, cal.position_calibration) == (0, "median") and (paper.border, paper.position_calibration) == (5, "none")
    assert {k: v for k, v in cal.get_params().items() if k not in ("border", "position_calibration")} == {
        k: v for k, v in paper.get_params().items() if k not in ("border", "position_calibration")}
    assert FCAVAECalibratedLocalizer(border=3, latent=7).get_params()["border"] == 3
    assert isinstance(pickle.loads(pickle.dumps(cal)), FCAVAECalibratedLocalizer)


def test_preset_init_refuses_a_default_for_no_parameter():
    from anomaly_clustering.interfaces import preset_init

    with pytest.raises(TypeError, match="bordr"):
        preset_init(FCAVAELocalizer.__init__, bordr=0)


# -- the image score from the interior (fca-vae-frame) -----------------------------------------------------------------
@pytest.fixture(scope="module")
def edge_set(tmp_path_factory):
    """10 generated textures, 6 with a dark hole planted where the paper's frame lies (centre 5 px from an edge,
    radius 5: inside the first two cells of the 16×16 map); masks at map resolution."""
    root = tmp_path_factory.mktemp("fca_edge")
    rng = np.random.default_rng(5)
    masks = []
    for i in range(10):
        img = make_texture(rng, SIZE)
        mask = np.zeros((SIZE, SIZE), bool)
        if i < 6:
            yy, xx = np.mgrid[0:SIZE, 0:SIZE]
            cy, cx = (5.0, rng.uniform(40, 88)) if i % 2 else (rng.uniform(40, 88), SIZE - 6.0)
            mask = np.hypot(yy - cy, xx - cx) < 5
            img[mask] = 0.05
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"{i:02d}.png")
        masks.append(np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((16, 16), Image.BOX)) > 64)
    return load_image_set(root), np.stack(masks)


def frame_localizer(**options) -> FCAVAEFrameLocalizer:
    return FCAVAEFrameLocalizer(input_size=SIZE, vae_iterations=60, vae_batch_pixels=256, **options)


def frame_localizer_of(score_border) -> FCAVAEFrameLocalizer:
    return frame_localizer(score_border=score_border)


@pytest.mark.parametrize("build", [lambda b: FCALocalizer(input_size=SIZE, border=0, score_border=b), frame_localizer_of])
def test_score_border_scores_the_interior_and_keeps_the_map(edge_set, build):
    images, _ = edge_set
    with runtime.settings(quiet=True):
        inner = build(3).fit_predict(images)
        whole = build(None).fit_predict(images)
    assert np.array_equal(inner.maps, whole.maps)  # the same map; only the score leaves the frame out
    assert np.allclose(whole.scores, whole.maps.reshape(10, -1).max(1))
    assert np.allclose(inner.scores, whole.maps[:, 3:-3, 3:-3].reshape(10, -1).max(1))
    assert (inner.scores < whole.scores).any()
    assert np.allclose(FCALocalizer(score_border=8)._image_scores(whole.maps), whole.scores)  # nothing left: the whole map


def test_the_frame_localizer_draws_defects_that_the_paper_zeroes(edge_set):
    """A hole at the edge: the paper's frame (2 cells at this size) blanks it; without the frame the map's peak
    lies on it, while the image score still ignores the frame."""
    images, masks = edge_set
    with runtime.settings(quiet=True):
        paper = FCAVAELocalizer(input_size=SIZE, vae_iterations=60, vae_batch_pixels=256, border=2).fit_predict(images).maps
        frame = frame_localizer(score_border=2).fit_predict(images).maps
    on = masks[:6].reshape(6, -1)
    assert not on.reshape(6, 16, 16)[:, 2:-2, 2:-2].any()  # every hole lies inside the paper's frame
    peak_on = lambda maps: on[np.arange(6), maps[:6].reshape(6, -1).argmax(1)].mean()  # noqa: E731
    assert peak_on(frame) >= 5 / 6 and peak_on(paper) == 0
    assert roc_auc_score(masks.ravel(), frame.ravel()) > roc_auc_score(masks.ravel(), paper.ravel()) + 0.05


def test_frame_preset_is_fca_vae_with_other_defaults():
    frame, paper = FCAVAEFrameLocalizer(), FCAVAELocalizer()
    assert (frame.border, frame.score_border, frame.vae_ensemble) == (0, 5, 3)
    assert (paper.border, paper.score_border, paper.vae_ensemble) == (5, None, 1)
    changed = ("border", "score_border", "vae_ensemble")
    assert {k: v for k, v in frame.get_params().items() if k not in changed} == {k: v for k, v in paper.get_params().items() if k not in changed}
    assert FCAVAEFrameLocalizer(score_border=2, latent=7).get_params()["score_border"] == 2
    assert isinstance(pickle.loads(pickle.dumps(frame)), FCAVAEFrameLocalizer)


@pytest.mark.parametrize("value", [-1, 1.5, "5"])
def test_bad_score_border_is_refused_before_work(edge_set, value):
    with pytest.raises(ValidationError, match="score_border"):
        frame_localizer(score_border=value).fit_predict(edge_set[0])


def test_scored_maps_zero_the_frame_the_scores_leave_out():
    maps = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6) + 1
    record = lambda info: AnomalyMaps(maps, maps.reshape(2, -1).max(1), np.full((2, 2), 48), info)  # noqa: E731
    scored = record({"score_border": 2}).scored_maps
    assert np.array_equal(scored[:, 2:4, 2:4], maps[:, 2:4, 2:4]) and scored.sum() == maps[:, 2:4, 2:4].sum()
    assert record({}).scored_maps is maps and record({"score_border": None}).scored_maps is maps
    assert record({"score_border": 3}).scored_maps is maps  # a frame that would leave nothing: the whole map, as the scores


def test_the_views_read_the_frame_localizers_maps_as_the_papers(edge_set):
    """``fca-vae-frame`` (the default) draws the frame for the user; what the classifier describes — eq. 2's weights,
    the crop's box — is the interior its scores read, i.e. exactly ``fca-vae``'s maps (same seed, same three VAEs)."""
    from anomaly_clustering.plugins.blind_lca.descriptor import WeightedDescriptor
    from anomaly_clustering.plugins.common.threshold import OtsuThreshold
    from anomaly_clustering.plugins.multiview.representation import MultiViewDescriptor

    images, _ = edge_set
    with runtime.settings(quiet=True):
        frame_localizer_ = frame_localizer(score_border=2)
        assert frame_localizer_.vae_ensemble == 3  # the default's three VAEs; fca-vae keeps the paper's one
        frame = frame_localizer_.fit_predict(images)
        paper = FCAVAELocalizer(input_size=SIZE, vae_iterations=60, vae_batch_pixels=256, border=2, vae_ensemble=3).fit_predict(images)
        assert frame.info["score_border"] == 2 and "score_border" not in paper.info
        assert not np.array_equal(frame.maps, paper.maps) and np.array_equal(frame.scored_maps, paper.maps)
        assert np.array_equal(frame.scores, paper.scores)
        regions = OtsuThreshold().fit_transform(paper, images)
        for rep in (WeightedDescriptor(input_size=SIZE), MultiViewDescriptor(views=("anomaly", "crop"), average_size=SIZE, crop_size=64)):
            a = rep.fit_transform(images, frame, regions).vectors
            assert np.array_equal(a, type(rep)(**rep.get_params()).fit_transform(images, paper, regions).vectors)
