"""MuSc: mutual scoring finds a planted defect with no clean images, excludes each image from its own scoring,
and scores new images against the fitted set."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomaly_clustering import runtime
from anomaly_clustering.data import load_image_set
from anomaly_clustering.examples import make_texture, plant_defect
from anomaly_clustering.plugins.musc.localizer import MuScLocalizer
from anomaly_clustering.plugins.musc.torch_model import lnamd, mutual_scores, rscin


def _write_set(folder, n, defect_every, size=128, seed=0, kind="hole"):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    masks = []
    for i in range(n):
        img, mask = make_texture(rng, size), np.zeros((size, size), bool)
        if defect_every and i % defect_every == 0:
            img, mask = plant_defect(img, kind, rng)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        masks.append(mask)
    return load_image_set(folder), np.stack(masks)


@pytest.fixture(scope="module")
def quiet_cache(tmp_path_factory):
    with runtime.settings(quiet=True, cache_dir=str(tmp_path_factory.mktemp("cache")), device="cpu"):
        yield


def test_mutual_scores_excludes_the_image_itself():
    torch.manual_seed(0)
    z = torch.randn(5, 16, 8)
    z[2, 7] += 10.0  # a patch no other image has
    with_exclusion = mutual_scores(z, z, exclude=list(range(5)), interval=0.3)
    without = mutual_scores(z, z, exclude=None, interval=0.3)
    assert with_exclusion[2].argmax() == 7 and with_exclusion[2, 7] > 5
    # Without exclusion the image's own copy is among the "smallest 30 %": smaller scores, dominated by the zero.
    assert without[2, 7] < with_exclusion[2, 7]
    # chunking does not change the result
    tiny = mutual_scores(z, z, exclude=list(range(5)), interval=0.3, max_elements=16 * 16)
    assert torch.allclose(tiny, with_exclusion, atol=1e-5)


def test_lnamd_and_rscin_shapes():
    x = torch.randn(2, 4, 6, 6)
    assert lnamd(x, 1).shape == (2, 36, 4) and torch.allclose(lnamd(x, 1)[0, 0], x[0, :, 0, 0])
    assert torch.allclose(lnamd(x, 3)[0, 7], x[0, :, 0:3, 0:3].mean((1, 2)))  # patch (1, 1): full 3×3 window
    s = rscin(torch.tensor([0.0, 1.0, 0.1]), torch.eye(3))
    assert s.shape == (3,) and s[1] > s[0]


def test_musc_localizes_planted_defects_zero_shot(tmp_path, quiet_cache):
    images, masks = _write_set(tmp_path / "set", 10, defect_every=3)
    loc = MuScLocalizer(input_size=128)
    maps = loc.fit_predict(images)
    assert maps.maps.shape == (10, 128, 128) and maps.info["mode"] == "mutual"
    assert roc_auc_score(masks.ravel(), maps.maps.ravel()) > 0.85
    assert roc_auc_score(masks.any((1, 2)), maps.scores) > 0.85
    # learned state: compact float16 features, small pickle
    assert all(f.dtype == np.float16 for f in loc.reference_features_)
    assert len(pickle.dumps(loc)) < 5_000_000

    new_images, new_masks = _write_set(tmp_path / "new", 3, defect_every=2, seed=7)
    new_maps = loc.predict(new_images)
    assert roc_auc_score(new_masks.ravel(), new_maps.maps.ravel()) > 0.85
