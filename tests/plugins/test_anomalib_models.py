"""anomalib models as Localizers, offline: PatchCore reference and blind modes, and the generic adapter."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomaly_clustering import runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.examples import make_texture, plant_defect
from anomaly_clustering.plugins.anomalib_models.generic import AnomalibLocalizer
from anomaly_clustering.plugins.anomalib_models.patchcore import PatchcoreLocalizer

SIZE = 96


def _write_set(folder, n, defect_at, size=SIZE, seed=0, kind="hole"):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    masks = []
    for i in range(n):
        img, mask = make_texture(rng, size), np.zeros((size, size), bool)
        if i in defect_at:
            img, mask = plant_defect(img, kind, rng)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        masks.append(mask)
    return load_image_set(folder), np.stack(masks)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomalib")
    with runtime.settings(quiet=True, cache_dir=str(root / "cache"), device="cpu"):
        test, masks = _write_set(root / "test", 8, defect_at={0, 3, 6})
        normal, _ = _write_set(root / "normal", 5, defect_at=set(), seed=11)
        yield test, masks, normal


def test_patchcore_reference_mode_localizes(data):
    test, masks, normal = data
    loc = PatchcoreLocalizer(input_size=SIZE).fit(test, normal)
    maps = loc.predict(test)
    assert maps.info["mode"] == "reference" and maps.maps.shape == (8, SIZE, SIZE)
    assert roc_auc_score(masks.ravel(), maps.maps.ravel()) > 0.85
    assert roc_auc_score(masks.any((1, 2)), maps.scores) > 0.85
    assert loc.memory_bank_.dtype == np.float16
    assert len(pickle.dumps(loc)) < 2_000_000  # the network is rebuilt, not pickled


def test_patchcore_blind_mode_flags_a_unique_defect(data):
    test, masks, _ = data
    # one image with a defect no other image has: it can only match itself, which blind mode forbids
    unique = test.subset([0, 1, 2, 4, 5, 7])
    loc = PatchcoreLocalizer(input_size=SIZE, coreset_sampling_ratio=1.0)
    maps = loc.fit_predict(unique)
    assert maps.info["mode"] == "blind" and maps.info["excluded_own_patches"]
    assert int(np.argmax(maps.scores)) == 0
    assert roc_auc_score(masks[[0, 1, 2, 4, 5, 7]].ravel(), maps.maps.ravel()) > 0.85
    # the exclusion is real: with a full bank and no masking every patch finds itself (distance ≈ 0, up to the
    # float16 bank's rounding); masked, the nearest patch is in another image, far larger
    emb, _ = loc._embed(unique)
    unmasked = loc._masked_nearest(emb, [-1] * len(unique))
    masked = loc._masked_nearest(emb, list(range(len(unique))))
    print(float(unmasked.max()), float(masked.min()), float(masked.median()))
    assert float(unmasked.max()) < 0.2 * float(masked.median())
    assert float(unmasked.median()) < 0.05 * float(masked.median())


@pytest.mark.parametrize("model", ["Patchcore", "Padim", "Dfm"])
def test_generic_adapter_runs_anomalib_models(data, model):
    test, masks, normal = data
    loc = AnomalibLocalizer(model=model, input_size=SIZE).fit(test, normal)
    maps = loc.predict(test)
    assert maps.maps.shape == (8, SIZE, SIZE) and np.isfinite(maps.maps).all()
    assert maps.info["backbone"] == "tf_efficientnet_lite0" and maps.info["mode"] == "reference"
    assert roc_auc_score(masks.any((1, 2)), maps.scores) > 0.85
    assert roc_auc_score(masks.ravel(), maps.maps.ravel()) > 0.8


def test_greedy_coreset_is_a_k_center_cover_as_good_as_anomalibs():
    """Distinct indices, reproducible by seed, each pick the farthest row from those before it (checked exactly on the
    projected rows), and a covering radius on clustered data no worse than anomalib's KCenterGreedy (±5 %)."""
    from anomalib.models.components import KCenterGreedy

    from anomaly_clustering.plugins.anomalib_models.coreset import greedy_coreset

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 64, generator=gen) * 4
    x = centres[torch.randint(40, (4000,), generator=gen)] + 0.3 * torch.randn(4000, 64, generator=gen)
    idx = greedy_coreset(x, 40, projection_dim=128, seed=1)  # D ≤ 128: no projection, exact distances
    assert len(set(idx.tolist())) == 40 and torch.equal(idx, greedy_coreset(x, 40, projection_dim=128, seed=1))
    for k in range(1, 40):  # the greedy rule, checked by brute force
        d = torch.cdist(x, x[idx[:k]]).min(dim=1).values
        assert d[idx[k]] >= d.max() - 1e-3
    radius = lambda sel: torch.cdist(x, x[sel]).min(dim=1).values.max().item()
    torch.manual_seed(0)
    theirs = torch.as_tensor(KCenterGreedy(x, 40 / 4000).select_coreset_idxs())
    assert radius(idx) <= 1.05 * radius(theirs)
    assert radius(greedy_coreset(x, 40, projection_dim=16, seed=1)) <= 1.5 * radius(theirs)  # projected: approximate
    with pytest.raises(ValueError, match="cannot select"):
        greedy_coreset(x, 0)
