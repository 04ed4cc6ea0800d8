"""Every kind of bad input, through the CLI: a one-line error naming the file or option, exit code ≠ 0, and
nothing half-written in the run folder. Odd but valid images (mixed sizes, grey, RGBA, 16-bit) just work."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from anomaly_clustering import cli
from anomaly_clustering.examples import make_texture, plant_defect
from conftest import FAST_FIT, run_files

QUICK = FAST_FIT[:4] + ["--quiet", "true", *FAST_FIT[-2:]]


def write_textures(folder: Path, n: int, size: int = 48, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = make_texture(rng, size)
        if i % 2:
            img, _ = plant_defect(img, "hole", rng)
        p = folder / f"{i:02d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def fit_error(capsys, data: Path | str, run: Path, *extra: str) -> str:
    """Run fit expecting a user error; return the one error line after checking the run folder has no outputs."""
    code = cli.main(["fit", "--data", str(data), "--run", str(run), *extra])
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("anomaly-cluster fit: error: ")
    assert not ({"clusters.csv", "maps", "masks", "model", "records", "summary.json", "config.yaml"} & run_files(run))
    return lines[0]


def test_missing_folder(tmp_path, capsys):
    line = fit_error(capsys, tmp_path / "nope", tmp_path / "run", *QUICK)
    assert str(tmp_path / "nope") in line and "no such folder" in line


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = fit_error(capsys, tmp_path / "empty", tmp_path / "run", *QUICK)
    assert "empty" in line and "no images found" in line


def test_folder_without_images(tmp_path, capsys):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "readme.txt").write_text("not an image")
    (d / "data.csv").write_text("a,b\n1,2\n")
    line = fit_error(capsys, d, tmp_path / "run", *QUICK)
    assert str(d) in line and "no images found" in line


def test_corrupt_file_is_skipped_with_warning_or_error_when_strict(tmp_path, capsys):
    d = tmp_path / "data"
    write_textures(d, 6)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = (d / "00.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    run = tmp_path / "run"
    code = cli.main(["fit", "--data", str(d), "--run", str(run), *QUICK, "--n_clusters", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warning = next(line for line in captured.err.splitlines() if line.startswith("warning:"))
    assert "skipped 2 unreadable image(s)" in warning and "broken.png" in warning and "truncated.png" in warning
    rows = (run / "clusters.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and not any("broken" in r or "truncated" in r for r in rows)

    line = fit_error(capsys, d, tmp_path / "strict_run", *QUICK, "--n_clusters", "2", "--strict", "true")
    assert "broken.png" in line and "--strict" in line


def test_mixed_sizes_and_modes_just_work(tmp_path, capsys):
    d = tmp_path / "odd"
    rng = np.random.default_rng(1)
    d.mkdir()
    rgb = [(make_texture(rng, s) * 255).astype(np.uint8) for s in (40, 64, 50, 72, 48, 56)]
    Image.fromarray(rgb[0]).save(d / "rgb.png")
    Image.fromarray(rgb[1][:, :40]).save(d / "wide_rgb.jpg")  # 64×40, JPEG
    Image.fromarray(rgb[2]).convert("L").save(d / "grey.png")
    rgba = np.dstack([rgb[3], np.full(rgb[3].shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    sixteen = (rgb[4][..., 0].astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(d / "sixteen.png")
    assert Image.open(d / "sixteen.png").mode.startswith("I")
    Image.fromarray(rgb[5]).convert("P").save(d / "palette.png")
    run = tmp_path / "run"
    code = cli.main(["fit", "--data", str(d), "--run", str(run), *QUICK, "--n_clusters", "2"])
    assert code == 0, capsys.readouterr().err
    rows = (run / "clusters.csv").read_text().splitlines()
    assert len(rows) == 7
    # outputs come back at each image's own size
    assert Image.open(run / "masks" / "wide_rgb.png").size == (40, 64)
    assert Image.open(run / "maps" / "sixteen.png").size == (48, 48)
    assert Image.open(run / "maps" / "grey.png").size == (50, 50)
    assert np.load(run / "maps" / "rgba.npy").shape == (64, 64)


def test_more_clusters_than_images(tmp_path, capsys):
    d = tmp_path / "data"
    write_textures(d, 3)
    line = fit_error(capsys, d, tmp_path / "run", *QUICK, "--n_clusters", "5")
    assert "--n_clusters 5" in line and "more clusters than images (3)" in line


def test_one_image(tmp_path, capsys):
    d = tmp_path / "data"
    write_textures(d, 1)
    line = fit_error(capsys, d, tmp_path / "run", *QUICK)
    assert str(d) in line and "at least 2" in line


def test_all_identical_images(tmp_path, capsys):
    d = tmp_path / "data"
    (p,) = write_textures(d, 1)
    for i in range(4):
        shutil.copy(p, d / f"copy{i}.png")
    line = fit_error(capsys, d, tmp_path / "run", *QUICK)
    assert "identical" in line and str(d) in line


def test_missing_weight_file(tmp_path, capsys, example_data):
    line = fit_error(
        capsys, example_data, tmp_path / "run", *FAST_FIT,
        "--representation.backbone", "mobilenet_v2", "--representation.backbone_weights", "/nonexistent.pth",
    )
    assert "/nonexistent.pth" in line and "backbone_weights" in line


def test_backbone_without_local_weights_never_downloads(tmp_path, capsys, example_data):
    """A timm backbone with no local weights is a clear error naming the fix while downloads are off (the suite)."""
    line = fit_error(capsys, example_data, tmp_path / "run", *FAST_FIT, "--representation.backbone", "resnet18")
    assert "resnet18" in line and "ANOMALY_CLUSTERING_OFFLINE" in line and "backbone_weights" in line


def test_unknown_option_on_command_line(tmp_path, capsys, example_data):
    line = fit_error(capsys, example_data, tmp_path / "run", *QUICK, "--bogus", "1")
    assert "--bogus" in line
    line = fit_error(capsys, example_data, tmp_path / "run", *QUICK, "--localizer.bogus", "1")
    assert "bogus" in line


def test_unknown_key_in_yaml(tmp_path, capsys, example_data):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data: {example_data}\nlocalizer: color-stats\nbogus_key: 3\n")
    line = fit_error(capsys, example_data, tmp_path / "run", "--config", str(cfg), "--quiet", "true")
    assert "bogus_key" in line
    cfg.write_text("localizer:\n  name: color-stats\n  not_an_option: 2\n")
    line = fit_error(capsys, example_data, tmp_path / "run", "--config", str(cfg), "--quiet", "true")
    assert "not_an_option" in line


def test_bad_yaml_and_missing_config(tmp_path, capsys, example_data):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("localizer: [unclosed\n")
    line = fit_error(capsys, example_data, tmp_path / "run", "--config", str(cfg))
    assert str(cfg) in line and "YAML" in line
    line = fit_error(capsys, example_data, tmp_path / "run", "--config", str(tmp_path / "absent.yaml"))
    assert "absent.yaml" in line


def test_unknown_plugin_and_bad_n_clusters(tmp_path, capsys, example_data):
    line = fit_error(capsys, example_data, tmp_path / "run", *QUICK, "--clusterer", "no-such")
    assert "--clusterer no-such" in line and "ward" in line
    line = fit_error(capsys, example_data, tmp_path / "run", *QUICK, "--n_clusters", "lots")
    assert "--n_clusters" in line and "lots" in line


def test_unknown_command(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_predict_and_evaluate_on_missing_run(tmp_path, capsys, example_data):
    assert cli.main(["predict", "--run", str(tmp_path / "norun"), "--data", str(example_data)]) == 2
    assert "not a finished anomaly-cluster run" in capsys.readouterr().err
    assert cli.main(["evaluate", "--run", str(tmp_path / "norun")]) == 2
    assert "norun" in capsys.readouterr().err
