"""AnomalyNCD family: crops, region merging, mask-guided attention, and a tiny CPU training run of the hybrid."""

import pickle

import numpy as np
import pytest
import torch

from anomaly_clustering.backbones import MissingWeightsError
from anomaly_clustering.data import load_ground_truth, load_image_set
from anomaly_clustering.examples import make_example_set
from anomaly_clustering.plugins.ncd.crops import crop_boxes, merge_boxes
from anomaly_clustering.plugins.ncd.merging import RegionMerge
from anomaly_clustering.plugins.ncd.representation import MGViTNCD, attention_weights, cls_attention_bias, token_keep
from anomaly_clustering.records import AnomalyMaps, Embeddings, Regions
from anomaly_clustering.regions import masks_to_regions


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, oversubscribed intra-op threads make small convolutions ~20× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _records(masks: np.ndarray):
    maps = masks.astype(np.float32) + 0.01 * np.random.default_rng(0).random(masks.shape, dtype=np.float32)
    amaps = AnomalyMaps(maps, maps.reshape(len(maps), -1).max(1), np.full((len(maps), 2), masks.shape[1]))
    masks, regs = masks_to_regions(masks, maps, 1)
    return amaps, Regions(masks, np.zeros(len(masks), np.float32), regs)


def test_crops_contain_their_regions_and_follow_the_rules():
    m = np.zeros((3, 100, 100), bool)
    m[0, 10:20, 70:95] = True  # one region near the border
    m[1, 40:44, 40:44] = True  # two regions 2 px apart (< 1 % of 100? no: 2 ≥ 1) → stay separate
    m[1, 40:44, 46:50] = True
    m[1, 80:90, 5:15] = True
    maps, regions = _records(m)
    crops = crop_boxes(regions, maps, counts=np.array([1, 1, 0]))
    assert [c.image_index for c in crops] == [0, 1, 1, 2]  # image 1 keeps count + 1 = 2 of its 3 boxes
    for c in crops:
        x0, y0, x1, y1 = c.box
        assert x1 - x0 == y1 - y0 and 0 <= x0 and 0 <= y0 and x1 <= 100 and y1 <= 100
        assert x1 - x0 >= 20 or c.whole_image  # at least 0.2 × the map side
        assert c.area == int(m[c.image_index, y0:y1, x0:x1].sum())
    assert crops[0].area == m[0].sum()  # the whole region lies inside its crop
    assert crops[-1].whole_image and crops[-1].box == (0, 0, 100, 100)
    # merging: boxes 0.5 px apart (< 1 %) merge into one square, far boxes do not
    merged = merge_boxes([(10, 10, 30, 30), (30, 10, 50, 30), (70, 70, 90, 90)], 100, 100, 1.0)
    assert sorted(merged) == [(10, 0, 50, 40), (70, 70, 90, 90)]



def test_region_merging_matches_hand_computation():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4]], np.float32)
    emb = Embeddings(probs, np.array([0, 0, 1]), 2, np.array([10.0, 20.0, 7.0], np.float32), {"kind": "probabilities"})
    out = RegionMerge(n_clusters=2, temperature=10.0).fit_predict(emb)
    a = np.exp(1.0) / (np.exp(1.0) + np.exp(2.0))  # softmax([10/10, 20/10]) = [0.2689, 0.7311]
    np.testing.assert_allclose(out.probabilities, [[a, 1 - a], [0.6, 0.4]], rtol=1e-5)
    assert out.labels.tolist() == [1, 0]
    # with a large temperature the weights become equal: mean of the two crops → tie broken to class 0
    assert RegionMerge(temperature=1e9).predict(emb).probabilities[0].tolist() == pytest.approx([0.5, 0.5])


def test_region_merging_falls_back_to_kmeans_when_the_head_collapsed():
    """A collapsed head sends every crop to class 0, with small differences left in the other classes: the argmax
    gives one cluster, the guard recovers the three groups from the probability rows."""
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 10)
    probs = np.full((30, 3), 0.05)
    probs[:, 0] = 0.85
    probs[np.arange(30), groups] += 0.04  # the group signal survives only as a small shift
    probs += rng.normal(0, 0.003, probs.shape)
    emb = Embeddings(probs.astype(np.float32), np.arange(30), 30, np.ones(30, np.float32), {"kind": "probabilities"})
    plain = RegionMerge(n_clusters=3, collapse_fallback=False).fit_predict(emb)
    assert len(np.unique(plain.labels)) == 1
    guard = RegionMerge(n_clusters=3)
    out = guard.fit_predict(emb)
    assert "collapse_fallback" in out.info
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(groups, out.labels) == 1.0
    np.testing.assert_array_equal(guard.predict(emb).labels, out.labels)


def test_mask_guided_attention_masks_the_class_token():
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    block = Block(32, 4, qkv_bias=True).eval()
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, :8, :8] = 1  # top-left quarter of a 4×4 token grid → tokens 0,1,4,5
    mask[1, :, 4:12, 4:12] = 1
    keep = token_keep(mask, (4, 4))
    assert keep[0].nonzero().flatten().tolist() == [0, 1, 2, 5, 6]  # CLS + 4 tokens
    x = torch.randn(2, 17, 32)
    w = attention_weights(block, x, cls_attention_bias(keep))
    cls_row = w[:, :, 0, :]  # B×heads×T
    assert cls_row[~keep[:, None, :].expand_as(cls_row)].abs().max() < 1e-6
    assert torch.allclose(cls_row.sum(-1), torch.ones(2, 4), atol=1e-5)
    free = attention_weights(block, x, None)
    assert free[:, :, 0, :][~keep[:, None, :].expand_as(cls_row)].min() > 1e-4  # unmasked attention looks everywhere
    assert torch.allclose(w[:, :, 1:], free[:, :, 1:], atol=1e-6)  # patch rows untouched
    # the block's own forward with the same bias gives the same output as applying those weights
    assert torch.isfinite(block(x, attn_mask=cls_attention_bias(keep))).all()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = make_example_set(tmp_path_factory.mktemp("ncd"), per_kind=3, n_good=0, size=96, seed=1)
    images = load_image_set(str(root))
    gt = load_ground_truth(images)
    masks = np.stack([gt.load_mask(i, (48, 48)) for i in range(len(images))])
    maps, regions = _records(masks)
    return images, maps, regions, gt


@pytest.mark.parametrize("cache_views", [True, False])
def test_two_epoch_hybrid_run_on_cpu(tiny_set, cache_views, monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALY_CLUSTERING_CACHE", str(tmp_path))
    images, maps, regions, _ = tiny_set
    rep = MGViTNCD(n_clusters=3, epochs=2, repeats=1, batch_size=8, input_size=64, width=32, depth=1, n_views=2,
                   cache_views=cache_views, lr=0.05, seed=0)
    emb = rep.fit_transform(images, maps, regions)
    assert emb.info["kind"] == "probabilities" and emb.vectors.shape[1] == 3
    assert emb.n_images == len(images) and set(emb.image_index.tolist()) == set(range(len(images)))
    np.testing.assert_allclose(emb.vectors.sum(1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(emb.weights, np.sqrt(np.maximum(emb.info["areas"], 1)), rtol=1e-5)
    assert len(rep.history_) == 2 and all(np.isfinite(rep.history_)) and 0 <= rep.best_head_ < 4
    assert len(rep.epoch_seconds_) == 2 and rep.cache_seconds_ >= 0
    again = pickle.loads(pickle.dumps(rep)).transform(images, maps, regions)  # rebuilt from its small state
    np.testing.assert_allclose(again.vectors, emb.vectors, atol=1e-5)
    out = RegionMerge(n_clusters=3).fit_predict(emb)
    assert out.labels.shape == (len(images),)


def test_teacher_temperature_warms_up_linearly():
    rep = MGViTNCD(epochs=10, teacher_temperature=(0.07, 0.04), teacher_warmup=0.5)
    temps = [rep._teacher_temperature(e) for e in range(10)]
    assert temps[0] == pytest.approx(0.07) and temps[5:] == [pytest.approx(0.04)] * 5
    assert all(a > b for a, b in zip(temps[:5], temps[1:6]))
    assert MGViTNCD(epochs=1, teacher_temperature=(0.07, 0.04))._teacher_temperature(0) == 0.04  # no warm-up


def test_vit_without_weights_refuses_random_init(tiny_set, tmp_path):
    images, maps, regions, _ = tiny_set
    rep = MGViTNCD(n_clusters=3, backbone="vit_small_patch16_224.dino", backbone_weights=None, epochs=1)
    with pytest.raises(MissingWeightsError):
        rep.fit(images, maps, regions)


def test_vit_path_trains_only_the_last_block_from_a_local_weights_file(tiny_set, tmp_path):
    import timm

    images, maps, regions, _ = tiny_set
    weights = tmp_path / "vit_tiny.pth"  # a stand-in checkpoint file (the real one is DINO's ViT-B/8)
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict(), weights)
    rep = MGViTNCD(n_clusters=3, backbone="vit_tiny_patch16_224", backbone_weights=str(weights), input_size=64,
                   epochs=1, repeats=1, batch_size=8, n_views=2, seed=0)
    emb = rep.fit_transform(images, maps, regions)
    assert emb.vectors.shape == (rep.n_crops_, 3) and np.isfinite(emb.vectors).all()
    assert rep._stem().mask_from == 12 - 9
    assert sum(k.startswith("blocks.") for k in rep.state_) == sum(k.startswith("blocks.0.") for k in rep.state_)  # one block


def test_labelled_base_set_joins_training(tiny_set, monkeypatch, tmp_path):
    """A labelled base set of another product (MVTec layout with masks) adds supervised crops to the training."""
    monkeypatch.setenv("ANOMALY_CLUSTERING_CACHE", str(tmp_path / "cache"))
    base = make_example_set(tmp_path / "base", per_kind=2, n_good=1, size=64, seed=11).parent
    images, maps, regions, _ = tiny_set
    rep = MGViTNCD(n_clusters=3, epochs=1, repeats=1, batch_size=8, input_size=64, width=32, depth=1, n_views=2,
                   lr=0.05, seed=0, base_dir=str(base))
    emb = rep.fit_transform(images, maps, regions)
    assert emb.n_images == len(images) and np.all(np.isfinite(emb.vectors))
    assert emb.vectors.shape[1] >= 3 and len(rep.history_) == 1
    with pytest.raises(ValueError, match="base_dir"):
        MGViTNCD(n_clusters=3, epochs=1, base_dir=str(tmp_path / "cache")).fit(images, maps, regions)
