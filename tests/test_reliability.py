"""Issue 17: eleven ways the CLI broke on bad input and faults, and the "also" items; one test each, through the CLI
where the user met the problem. Tiny generated images (24–48 px), input size 32–64, a handful of images."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_clustering import cli

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
from badfolders import (  # noqa: E402
    RUN_OUTPUTS,
    CaseTimeout,
    bomb_png,
    exif_rotated_jpeg,
    good_images,
    run_state,
    same_picture_many_ways,
    texture,
    time_limit,
)

FIT = ["--localizer", "color-stats", "--input_size", "48", "--quiet", "true"]


def main(capsys, *args) -> tuple[int, list[str], list[str]]:
    """(exit code, warning lines, other stderr lines); fails on a traceback or a hang."""
    try:
        with time_limit(180):
            code = cli.main([str(a) for a in args])
    except CaseTimeout as exc:
        pytest.fail(f"{' '.join(map(str, args))}: {exc}")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    return code, [l for l in err if l.startswith("warning:")], [l for l in err if not l.startswith("warning:")]


def one_error(capsys, *args) -> str:
    code, _, other = main(capsys, *args)
    assert code == 2, f"exit {code}: {other}"
    assert len(other) == 1 and other[0].startswith(f"anomaly-cluster {args[0]}: error: "), other
    return other[0]


def labels_of(run: Path) -> dict[str, int]:
    with open(run / "clusters.csv", newline="") as f:
        return {r["image"]: int(r["cluster"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory) -> Path:
    """A finished run on a flat folder of 6 textures (no type folders, so no ground truth)."""
    root = tmp_path_factory.mktemp("flat")
    good_images(root / "data", 6, size=40)
    run = root / "run"
    assert cli.main(["fit", "--data", str(root / "data"), "--run", str(run), *FIT, "--n_clusters", "2", "--cache_dir", str(root / "cache")]) == 0
    return run


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("cache", "report"))
    return dst


# ------------------------------------------------------------------------------------------------------ case 1
def test_case01_corrupt_feature_cache_is_verified_and_recomputed(tmp_path, capsys):
    data = tmp_path / "data"
    good_images(data, 8, size=40)
    base = ["fit", "--data", data, *FIT, "--n_clusters", "3"]
    # reference: the changed option in a fresh cache
    assert main(capsys, *base, "--localizer.window", "7", "--run", tmp_path / "ref", "--cache_dir", tmp_path / "c_ref")[0] == 0
    want = labels_of(tmp_path / "ref")
    cache = tmp_path / "cache"
    assert main(capsys, *base, "--run", tmp_path / "a", "--cache_dir", cache)[0] == 0
    (feat,) = (cache / "features").glob("*/data.npy")
    size = feat.stat().st_size
    with open(feat, "r+b") as f:  # the corruption: zeros from byte 200, same size
        f.seek(200)
        f.write(b"\0" * (size - 200))
    code, warned, _ = main(capsys, *base, "--localizer.window", "7", "--run", tmp_path / "b", "--cache_dir", cache)
    assert code == 0 and any("feature cache" in w for w in warned)
    assert labels_of(tmp_path / "b") == want
    # random bytes in the body, then a garbage header: recomputed too (downstream entries dropped to force a read)
    rng = np.random.default_rng(0)
    for corrupt in ("random", "header"):
        (feat,) = (cache / "features").glob("*/data.npy")
        with open(feat, "r+b") as f:
            if corrupt == "random":
                f.seek(300)
                f.write(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            else:
                f.write(b"garbage header" * 4)
        for stage in ("representation", "clusterer"):
            shutil.rmtree(cache / stage)
        code, warned, _ = main(capsys, *base, "--localizer.window", "7", "--run", tmp_path / corrupt, "--cache_dir", cache)
        assert code == 0 and any("feature cache" in w for w in warned), corrupt
        assert labels_of(tmp_path / corrupt) == want, corrupt


def test_case01_only_the_damaged_feature_shards_are_recomputed(tmp_path):
    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec, extract_features
    from anomaly_clustering.data import load_image_set

    good_images(tmp_path / "data", 6, size=32)
    images = load_image_set(tmp_path / "data")
    spec = FeatureSpec(input_size=32)
    with runtime.settings(cache_dir=str(tmp_path / "cache"), quiet=True, device="cpu"):
        first = np.asarray(extract_features(images, spec, shard_size=2).data)
        (entry,) = (tmp_path / "cache" / "features").glob("*/data.npy")
        rows = first.shape[0]
        offset = entry.stat().st_size - first[0].nbytes * rows
        with open(entry, "r+b") as f:  # damage row 3 only (shard 1 of 3)
            f.seek(offset + first[0].nbytes * 3 + 10)
            f.write(b"\xff" * 64)
        with pytest.warns(UserWarning, match="1 damaged shard"):
            again = np.asarray(extract_features(images, spec, shard_size=2).data)
    np.testing.assert_array_equal(again, first)


# ------------------------------------------------------------------------------------------------------ case 2
def test_case02_output_names_never_collide(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "x").mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = ["x/y.png", "x__y.png", "img.png", "img.jpg", "IMG.bmp", "other.png"]
    sizes = {}
    for i, name in enumerate(names):
        h = 24 + 4 * i  # a different height per image, to check each output belongs to its image
        Image.fromarray(texture(rng, (h, 32), i % 4)).save(data / name)
        sizes[name] = (32, h)
    code, _, _ = main(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2")
    assert code == 0
    with open(tmp_path / "run" / "clusters.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == sorted(names)
    assert len({r["mask_file"] for r in rows}) == len(rows) == len(list((tmp_path / "run" / "masks").iterdir()))
    assert len(list((tmp_path / "run" / "maps").glob("*.npy"))) == len(rows)
    for r in rows:
        assert Image.open(tmp_path / "run" / r["mask_file"]).size == sizes[r["image"]], r
        assert (tmp_path / "run" / r["map_file"]).is_file()


# ------------------------------------------------------------------------------------------------------ case 3
def test_case03_decompression_bomb_is_skipped_or_refused_under_strict(tmp_path, capsys):
    data = tmp_path / "data"
    good_images(data, 5, size=40)
    bomb_png(data / "bomb.png")
    code, warned, _ = main(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2")
    assert code == 0 and any("bomb.png" in w and "skipped" in w for w in warned)
    assert "bomb.png" not in labels_of(tmp_path / "run")
    line = one_error(capsys, "fit", "--data", data, "--run", tmp_path / "strict", *FIT, "--n_clusters", "2", "--strict", "true")
    assert "bomb.png" in line and "--strict" in line and "ANOMALY_CLUSTERING_MAX_PIXELS" in line


def test_case03_pixel_limit_can_be_raised(tmp_path, monkeypatch):
    from anomaly_clustering.data import DataError, load_image, load_image_set

    good_images(tmp_path, 3, size=40)
    monkeypatch.setenv("ANOMALY_CLUSTERING_MAX_PIXELS", "1000")  # 40×40 = 1600 pixels: over
    with pytest.raises(DataError, match="over the limit of 1000"):
        load_image(tmp_path / "img00.png")
    with pytest.raises(DataError, match="0 readable"), pytest.warns(UserWarning, match="skipped 3"):
        load_image_set(tmp_path)
    monkeypatch.setenv("ANOMALY_CLUSTERING_MAX_PIXELS", "2000")
    assert len(load_image_set(tmp_path)) == 3


# ------------------------------------------------------------------------------------------------------ case 4
def test_case04_fifo_named_png_does_not_hang(tmp_path, capsys):
    data = tmp_path / "data"
    good_images(data, 5, size=40)
    os.mkfifo(data / "pipe.png")
    code, warned, _ = main(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2")
    assert code == 0 and any("pipe.png" in w and "not a regular file" in w for w in warned)
    assert "pipe.png" not in labels_of(tmp_path / "run")


# ------------------------------------------------------------------------------------------------------ case 5
def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write in: read-only permissions, or (for root, whom permissions do not stop)
    the kernel's read-only /sys."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    for folder in (ro, Path("/sys")):
        try:
            (folder / "probe").touch()
            (folder / "probe").unlink()
        except OSError:
            return folder
    pytest.fail("found no folder this process cannot write")


@pytest.mark.parametrize("option", ["--run", "--cache_dir"])
def test_case05_unwritable_run_or_cache_dir_is_one_line(tmp_path, capsys, option):
    data = tmp_path / "data"
    good_images(data, 4, size=32)
    target = _unwritable(tmp_path) / "out"
    args = {"--run": tmp_path / "run", "--cache_dir": tmp_path / "cache", option: target}
    line = one_error(capsys, "fit", "--data", data, *FIT, "--n_clusters", "2", *[str(x) for kv in args.items() for x in kv])
    assert f"{option} {target}" in line and "cannot write" in line
    under_file = tmp_path / "a_file"
    under_file.write_text("x")
    args[option] = under_file / "out"
    line = one_error(capsys, "fit", "--data", data, *FIT, "--n_clusters", "2", *[str(x) for kv in args.items() for x in kv])
    assert option in line and "is a file" in line


# ------------------------------------------------------------------------------------------------------ case 6
def test_case06_text_file_as_backbone_weights(tmp_path, capsys, example_data):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are not weights\n")
    for option in ("--backbone_weights", "--representation.backbone_weights"):
        line = one_error(capsys, "fit", "--data", example_data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2", option, notes)
        assert option in line and str(notes) in line and "not a weights file" in line
    assert not (tmp_path / "run").exists() or run_state(tmp_path / "run") == "none"


def test_case06_damaged_weights_file_names_file_and_option(tmp_path):
    from anomaly_clustering.backbones import MissingWeightsError, load_state_file

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 200)  # looks like a torch zip, is not one
    with pytest.raises(MissingWeightsError, match=r"--backbone_weights .*bad\.pth: not a readable weights file"):
        load_state_file(str(bad))


# ------------------------------------------------------------------------------------------------------ case 7
def test_case07_offline_torchvision_backbone_never_downloads(tmp_path, capsys, monkeypatch, example_data):
    import torch.hub
    import torchvision.models._api as tv_api

    from anomaly_clustering.backbones import MissingWeightsError, create_backbone

    calls = []
    for module in (torch.hub, tv_api):
        monkeypatch.setattr(module, "load_state_dict_from_url", lambda *a, **k: calls.append(a) or {})
    monkeypatch.setenv("ANOMALY_CLUSTERING_OFFLINE", "1")
    monkeypatch.delenv("ANOMALY_CLUSTERING_WEIGHTS", raising=False)
    with pytest.raises(MissingWeightsError, match="ANOMALY_CLUSTERING_OFFLINE"):
        create_backbone("mobilenet_v2")
    assert not calls, "a download was attempted"
    line = one_error(capsys, "fit", "--data", example_data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2", "--backbone", "mobilenet_v2")
    assert "mobilenet_v2" in line and "ANOMALY_CLUSTERING_OFFLINE" in line and not calls


# ------------------------------------------------------------------------------------------------------ case 8
def test_case08_evaluate_without_labels_says_so(flat_run, tmp_path, capsys):
    line = one_error(capsys, "evaluate", "--run", flat_run)
    assert "no ground-truth labels" in line and "--labels" in line
    missing = tmp_path / "labels.csv"
    line = one_error(capsys, "evaluate", "--run", flat_run, "--labels", missing)
    assert f"--labels {missing}" in line and "no such file" in line
    assert not (flat_run / "evaluation.json").exists()


# ------------------------------------------------------------------------------------------------------ case 9
def test_case09_pixel_identical_copies_warn_once_and_stay_together(tmp_path, capsys):
    data = tmp_path / "data"
    rng = np.random.default_rng(2)
    copies = same_picture_many_ways(data, texture(rng, 40, 1), "dup", 6)
    good_images(data, 5, size=40, seed=3)
    code, warned, _ = main(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "auto", "--k_max", "4")
    assert code == 0
    dup_warnings = [w for w in warned if "pixel-identical" in w]
    assert len(dup_warnings) == 1 and all(p.name in dup_warnings[0] for p in copies) and "6 images" in dup_warnings[0]
    labels = labels_of(tmp_path / "run")
    assert len({labels[p.name] for p in copies}) == 1, labels
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["clusterer_info"].get("duplicates_merged") == 5


def test_case09_copies_with_a_normal_first_classifier_that_reads_per_image_info(tmp_path, capsys):
    """The clusterer sees one copy of each picture: the per-image verdicts it reads (has a region, image score) must
    shrink with the images, for the region rule and the score rule alike (a suite run once failed here)."""
    data = tmp_path / "data"
    rng = np.random.default_rng(5)
    copies = same_picture_many_ways(data, texture(rng, 40, 1), "dup", 4)
    good_images(data, 6, size=40, seed=6)
    small = ["--representation.context_size", "64", "--representation.crop_size", "64", "--representation.average_size", "64"]
    for classifier in ("multiview-all-normal-first", "multiview-normal-first"):
        run = tmp_path / classifier
        code, _, _ = main(capsys, "fit", "--data", data, "--run", run, *FIT, "--classifier", classifier, *small, "--n_clusters", "auto", "--k_max", "4")
        assert code == 0, capsys.readouterr().err
        labels = labels_of(run)
        assert len(labels) == 10 and len({labels[p.name] for p in copies}) == 1, labels
        summary = json.loads((run / "summary.json").read_text())
        assert summary["clusterer_info"].get("duplicates_merged") == 3


def test_case09_more_clusters_than_distinct_pictures(tmp_path, capsys):
    data = tmp_path / "data"
    rng = np.random.default_rng(4)
    same_picture_many_ways(data, texture(rng, 32, 1), "a", 3)
    same_picture_many_ways(data, texture(rng, 32, 2), "b", 3)
    line = one_error(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "3")
    assert "--n_clusters 3" in line and "2 distinct images" in line
    code, _, _ = main(capsys, "fit", "--data", data, "--run", tmp_path / "run2", *FIT, "--n_clusters", "2")
    labels = labels_of(tmp_path / "run2")
    assert code == 0 and len({labels[n] for n in labels if n.startswith("a")}) == 1 and len({labels[n] for n in labels if n.startswith("b")}) == 1


# ----------------------------------------------------------------------------------------------------- case 10
CUDA_MISSING = "cuda" if not __import__("torch").cuda.is_available() else "cuda:99"


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--k_method", "nope"], "--k_method nope"),
        (["--input_size", "0"], "--input_size 0"),
        (["--input_size", "-5"], "--input_size -5"),
        (["--input_size", "7"], "--input_size 7"),
        (["--localizer.input_size", "7"], "--localizer.input_size 7"),
        (["--device", CUDA_MISSING], f"--device {CUDA_MISSING}"),
        (["--device", "banana"], "--device banana"),
        (["--k_min", "5", "--k_max", "2"], "--k_min 5 --k_max 2"),
        (["--k_min", "1"], "--k_min 1"),
        (["--n_clusters", "0"], "--n_clusters 0"),
        (["--seed", "-1"], "--seed -1"),
        (["--backbone", "no_such_net"], "--backbone no_such_net"),
        (["--normal_dir", "nonexistent-normal-dir"], "--normal_dir nonexistent-normal-dir"),
    ],
)
def test_case10_options_fail_before_any_work(tmp_path, capsys, example_data, args, expect):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    line = one_error(capsys, "fit", "--data", example_data, "--run", tmp_path / "run", *FIT, "--cache_dir", cache, *args)
    assert expect in line
    assert not cache.exists() and not (tmp_path / "run").exists(), "work started before the check"
    assert time.perf_counter() - t0 < 60


def test_case10_auto_with_two_images_fails_before_any_work(tmp_path, capsys):
    good_images(tmp_path / "data", 2, size=32)
    line = one_error(capsys, "fit", "--data", tmp_path / "data", "--run", tmp_path / "run", *FIT, "--cache_dir", tmp_path / "cache")
    assert "--n_clusters auto" in line and "3 distinct images" in line
    assert not (tmp_path / "cache").exists()


def test_case10_report_and_predict_on_unfinished_run(flat_run, tmp_path, capsys):
    run = copy_run(flat_run, tmp_path / "run")
    (run / "summary.json").unlink()
    line = one_error(capsys, "report", "--run", run)
    assert str(run) in line and "not a finished" in line and "summary.json" in line
    assert not (run / "report").exists()
    line = one_error(capsys, "predict", "--run", run, "--data", run)
    assert "summary.json" in line
    line = one_error(capsys, "evaluate", "--run", flat_run, "--labels", tmp_path)
    assert "--labels" in line


# ----------------------------------------------------------------------------------------------------- case 11
@pytest.mark.parametrize("damage", ["protocol", "flip", "zeros", "truncate", "garbage"])
def test_case11_damaged_model_is_one_line(flat_run, tmp_path, capsys, damage):
    run = copy_run(flat_run, tmp_path / "run")
    pkl = run / "model" / "clusterer.pkl"
    data = bytearray(pkl.read_bytes())
    if damage == "protocol":  # the ValueError (unsupported pickle protocol): one damaged byte
        data[1] = 0x09
    elif damage == "flip":
        data[2:40] = b"\xff" * 38
    elif damage == "zeros":
        data[len(data) // 3 :] = b"\0" * (len(data) - len(data) // 3)
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"this is not a pickle")
    pkl.write_bytes(bytes(data))
    line = one_error(capsys, "predict", "--run", run, "--data", run.parent, "--quiet", "true")
    assert "model is damaged" in line and "clusterer.pkl" in line


# ----------------------------------------------------------------------------------------------------- also
def test_also_exif_orientation_is_applied(tmp_path, capsys):
    from anomaly_clustering.data import image_size, load_image

    data = tmp_path / "data"
    good_images(data, 4, size=40)
    stored = texture(np.random.default_rng(5), (24, 40), 2)  # stored 40 wide × 24 high; displayed 24 wide × 40 high
    exif_rotated_jpeg(data / "rotated.jpg", stored)
    assert load_image(data / "rotated.jpg").shape[:2] == (40, 24) and image_size(data / "rotated.jpg") == (40, 24)
    code, _, _ = main(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2")
    assert code == 0
    with open(tmp_path / "run" / "clusters.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["image"] == "rotated.jpg")
    assert Image.open(tmp_path / "run" / row["mask_file"]).size == (24, 40)  # PIL size is (width, height)


def test_also_full_disk_message_names_the_folder(flat_run, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    good_images(data, 4, size=32)
    real = Path.write_text

    def full(self, *a, **k):  # noqa: ANN001
        if self.name == "clusters.csv":
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write() raises it: no file name
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    code, _, other = main(capsys, "fit", "--data", data, "--run", tmp_path / "run", *FIT, "--n_clusters", "2", "--cache_dir", tmp_path / "c")
    assert code == 3 and len(other) == 1
    assert "()" not in other[0] and f"disk full writing {tmp_path / 'run'}" in other[0], other[0]
    assert run_state(tmp_path / "run") == "none"


def test_also_report_is_written_atomically(flat_run, tmp_path, capsys, monkeypatch):
    run = copy_run(flat_run, tmp_path / "run")
    assert main(capsys, "report", "--run", run)[0] == 0
    page = (run / "report" / "index.html").read_text()
    real = Image.Image.save
    count = {"n": 0}

    def full(self, *a, **k):  # noqa: ANN001
        count["n"] += 1
        if count["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Image.Image, "save", full)
    code, _, other = main(capsys, "report", "--run", run)
    assert code == 3 and "disk full" in other[0] and "()" not in other[0]
    assert (run / "report" / "index.html").read_text() == page  # the previous report is untouched
    shutil.rmtree(run / "report")
    count["n"] = 0
    assert main(capsys, "report", "--run", run)[0] == 3
    assert not (run / "report").exists() and not [p for p in run.iterdir() if "report" in p.name]


def test_also_run_folder_is_unfinished_until_summary_is_written(flat_run, tmp_path, capsys, monkeypatch):
    """A fit that dies while replacing an older run's outputs leaves a folder every reader calls unfinished."""
    run = copy_run(flat_run, tmp_path / "run")
    import anomaly_clustering.runs as runs

    real = runs.os.replace

    def die(src, dst):  # noqa: ANN001
        if Path(dst).name == "model":
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(runs.os, "replace", die)
    data = Path(json.loads((run / "model" / "pipeline.json").read_text())["images"]["root"])
    code, _, _ = main(capsys, "fit", "--data", data, "--run", run, *FIT, "--n_clusters", "3", "--cache_dir", tmp_path / "c")
    assert code == 130
    monkeypatch.undo()
    assert not (run / "summary.json").exists()
    assert "not a finished" in one_error(capsys, "report", "--run", run)
    assert run_state(run) == "partial" and RUN_OUTPUTS - {"summary.json"} >= {p.name for p in run.iterdir()} & RUN_OUTPUTS
