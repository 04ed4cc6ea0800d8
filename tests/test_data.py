"""Image discovery and loading in any mode, and ground truth from the MVTec layout or a CSV."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomaly_clustering.data import DataError, discover_images, load_ground_truth, load_image, load_image_set, load_resized


@pytest.fixture
def modes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.zeros((10, 12), np.uint8)]), "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.full((10, 12), 65535, np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(rgb).save(tmp_path / "pic.bmp")
    Image.fromarray(rgb).save(tmp_path / "pic.tif")
    return tmp_path, rgb


def test_load_image_any_mode_as_rgb8(modes):
    root, rgb = modes
    np.testing.assert_array_equal(load_image(root / "rgb.png"), rgb)
    grey = load_image(root / "grey.png")
    assert grey.shape == (10, 12, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 1], rgb[..., 0])
    np.testing.assert_array_equal(load_image(root / "clear.png"), 0)  # fully transparent → black background
    np.testing.assert_array_equal(load_image(root / "white16.png"), 255)  # 16-bit scaled to 8-bit
    np.testing.assert_array_equal(load_image(root / "pic.bmp"), rgb)
    np.testing.assert_array_equal(load_image(root / "pic.tif"), rgb)
    assert load_resized(root / "rgb.png", 8).shape == (8, 8, 3)
    assert load_resized(root / "rgb.png", (6, 4)).shape == (6, 4, 3)


def test_load_image_names_the_bad_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: cannot read image"):
        load_image(bad)


def test_discovery_recursive_sorted_filtered(tmp_path):
    for rel in ("b/2.png", "a/1.JPG", "a/x.txt", "ground_truth/a/1_mask.png", ".hidden/3.png", "c/.4.png", "top.tiff"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    assert discover_images(tmp_path) == ["a/1.JPG", "b/2.png", "top.tiff"]
    assert discover_images(tmp_path, include=["a/*"]) == ["a/1.JPG"]
    assert discover_images(tmp_path, exclude=["a/*", "*.tiff"]) == ["b/2.png"]
    with pytest.raises(DataError, match="no such folder"):
        discover_images(tmp_path / "absent")
    with pytest.raises(DataError, match="expected a folder"):
        discover_images(tmp_path / "top.tiff")


def test_image_set_digests_and_skips(modes, recwarn):
    root, _ = modes
    (root / "broken.png").write_bytes(b"\x89PNG garbage")
    s = load_image_set(root)
    assert "broken.png" not in s.names and s.skipped == ("broken.png",)
    assert any("broken.png" in str(w.message) for w in recwarn)
    assert len(s) == 6 and len(set(s.digests)) == 4  # digests hash the pixels: rgb.png, pic.bmp, pic.tif are one picture
    assert any("pixel-identical" in str(w.message) and "pic.bmp" in str(w.message) for w in recwarn)
    assert s.subset([1, 0]).names == (s.names[1], s.names[0])
    assert s.fingerprint() != s.subset(list(range(len(s)))[::-1]).fingerprint()  # order matters
    with pytest.raises(DataError, match="--strict"):
        load_image_set(root, strict=True)
    # renaming the folder keeps the fingerprint (content-addressed)
    moved = root.parent / "moved"
    root.rename(moved)
    assert load_image_set(moved).fingerprint() == s.fingerprint()


def test_ground_truth_from_mvtec_layout(example_data):
    s = load_image_set(example_data)
    gt = load_ground_truth(s)
    ids, classes = gt.label_ids()
    assert classes == ["good", "hole", "scratch", "stain"]
    assert len(ids) == len(s) == 16 and np.bincount(ids).tolist() == [4, 4, 4, 4]
    assert gt.has_masks
    for i, name in enumerate(s.names):
        if name.startswith("good/"):
            assert gt.mask_paths[i] is None and not gt.load_mask(i, (8, 8)).any()
        else:
            assert gt.mask_paths[i].endswith(name.replace(".png", "_mask.png").split("/")[-1])
            assert gt.load_mask(i, (64, 64)).any()


def test_ground_truth_from_csv(example_data, tmp_path):
    s = load_image_set(example_data)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("image,label\n" + "".join(f"{n},{'A' if i % 2 else 'B'}\n" for i, n in enumerate(s.names)))
    gt = load_ground_truth(s, str(csv_path))
    assert gt.labels[0] == "B" and gt.labels[1] == "A" and not gt.has_masks
    csv_path.write_text("image,label\n" + f"{s.names[0]},A\n")
    with pytest.raises(DataError, match="no row for 15 image"):
        load_ground_truth(s, str(csv_path))
    csv_path.write_text("file,kind\nx,y\n")
    with pytest.raises(DataError, match="columns 'image' and 'label'"):
        load_ground_truth(s, str(csv_path))
