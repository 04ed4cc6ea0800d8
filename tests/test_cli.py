"""End to end through the command line: example → fit → rerun → predict → evaluate, configs, and the README."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage

from anomaly_clustering import cli, config, registry
from conftest import FAST_FIT

REPO = Path(__file__).resolve().parents[1]
STAGES = ("localizer", "binarizer", "representation", "clusterer")


def test_example_command_writes_mvtec_layout(tmp_path, capsys):
    assert cli.main(["example", str(tmp_path / "ex"), "--per_kind", "2", "--n_good", "1", "--size", "32"]) == 0
    assert "example set written" in capsys.readouterr().out
    for kind in ("good", "scratch", "hole", "stain"):
        assert len(list((tmp_path / "ex" / "test" / kind).glob("*.png"))) == (1 if kind == "good" else 2)
    assert Image.open(tmp_path / "ex" / "ground_truth" / "hole" / "000_mask.png").size == (32, 32)


def test_example_object_kind_puts_every_defect_on_the_object(tmp_path, capsys):
    """``--kind object``: a disc on a plain background whose place varies; every defect mask lies on the disc's face,
    and the good images differ from each other in where the disc sits (the nuisance a descriptor must not follow)."""
    assert cli.main(["example", str(tmp_path / "obj"), "--kind", "object", "--per_kind", "3", "--n_good", "3", "--size", "96"]) == 0
    capsys.readouterr()
    grey = {p: np.asarray(Image.open(p).convert("L"), np.float32) for p in sorted((tmp_path / "obj" / "test").rglob("*.png"))}
    for path, img in grey.items():
        if path.parent.name == "good":
            continue
        mask = np.asarray(Image.open(tmp_path / "obj" / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")) > 0
        assert mask.any(), path
        face = ndimage.binary_fill_holes(img > 60)  # the disc (background ≈ 30 of 255), a dark pit in it included
        assert face[mask].mean() > 0.95, f"{path}: defect off the object"
    goods = [img > 60 for path, img in grey.items() if path.parent.name == "good"]
    centres = [np.argwhere(g).mean(0) for g in goods]
    assert max(np.abs(a - b).max() for a in centres for b in centres) > 1.0  # the object moves between images
    assert cli.main(["example", str(tmp_path / "bad"), "--kind", "blob"]) == 2
    assert "kind" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_fit_writes_a_complete_run_folder(fitted_run, example_data):
    run = fitted_run
    for name in ("clusters.csv", "maps", "masks", "model", "records", "config.yaml", "summary.json"):
        assert (run / name).exists(), name
    with open(run / "clusters.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "cluster", "anomaly_score", "threshold", "n_regions", "regions", "map_file", "mask_file"]
    names = sorted(p.relative_to(example_data).as_posix() for p in example_data.rglob("*.png"))
    assert sorted(r["image"] for r in rows) == names
    assert {int(r["cluster"]) for r in rows} == {0, 1, 2, 3}
    for r in rows:
        float(r["anomaly_score"])
        assert isinstance(json.loads(r["regions"]), list) and len(json.loads(r["regions"])) == int(r["n_regions"])
    # maps: one .npy at map resolution and one heat-map PNG at image size per image; masks likewise
    stem = "hole__000"
    assert np.load(run / "maps" / f"{stem}.npy").shape == (64, 64)
    assert Image.open(run / "maps" / f"{stem}.png").size == (64, 64)
    assert Image.open(run / "masks" / f"{stem}.png").mode == "L"
    assert len(list((run / "maps").glob("*.npy"))) == len(names) == len(list((run / "masks").glob("*.png")))
    assert {p.name for p in (run / "model").iterdir()} >= {f"{s}.pkl" for s in STAGES} | {"pipeline.json"}
    assert {p.name for p in (run / "records").iterdir()} == {"maps", "regions", "embeddings", "clustering"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["localizer"]["name"] == "color-stats" and config["n_clusters"] == 4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_images"] == len(names) and summary["n_clusters"] == 4 and sum(summary["cluster_sizes"]) == len(names)
    assert set(summary["seconds"]) == set(STAGES) and set(summary["cache_reused"]) == set(STAGES)
    assert summary["peak_rss_mb"] > 0
    # nothing staged is left behind
    assert not [p for p in run.iterdir() if p.name.startswith(".staging")]


def test_rerun_reuses_all_stages(fitted_run, example_data, capsys):
    code = cli.main(["fit", "--data", str(example_data), *FAST_FIT, "--run", str(fitted_run), "--quiet", "false"])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads((fitted_run / "summary.json").read_text())
    assert summary["cache_reused"] == {s: True for s in STAGES} and summary["stability"]["reused_from_cache"] is True
    assert out.count("reused cached result") == 5  # the four stages and the clusters' stability


def test_predict_writes_predictions(fitted_run, example_root, tmp_path, capsys):
    from anomaly_clustering.examples import make_example_set

    new = make_example_set(tmp_path / "new", per_kind=1, n_good=1, size=64, seed=7)
    out = tmp_path / "pred"
    assert cli.main(["predict", "--run", str(fitted_run), "--data", str(new), "--output", str(out), "--quiet", "true"]) == 0
    assert "4 images assigned" in capsys.readouterr().out
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(-1 <= int(r["cluster"]) < 4 for r in rows)  # -1: open-set "unknown"
    assert all((r["name"] == "unknown") == (r["cluster"] == "-1") for r in rows)
    assert len(list((out / "maps").glob("*.npy"))) == 4
    # the fitted run itself is left as it was
    assert not (fitted_run / "predictions.csv").exists()


def test_evaluate_prints_scores(fitted_run, capsys):
    assert cli.main(["evaluate", "--run", str(fitted_run)]) == 0
    out = capsys.readouterr().out
    assert "NMI" in out and "ARI" in out and "F1-micro" in out and "PRO@0.3" in out
    result = json.loads((fitted_run / "evaluation.json").read_text())
    assert result["classes"] == ["good", "hole", "scratch", "stain"]
    assert 0.0 <= result["clustering"]["nmi"] <= 1.0
    assert result["localization"]["auroc_image"] is not None and result["localization"]["pro_30"] is not None
    assert cli.main(["evaluate", "--run", str(fitted_run), "--json", "true"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == result["n_images"]


def test_print_config_and_yaml_config(tmp_path, example_data, capsys):
    code = cli.main(["fit", "--data", str(example_data), *FAST_FIT, "--localizer.window", "5", "--print_config"])
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["localizer"]["name"] == "color-stats" and printed["localizer"]["window"] == 5
    default_clusterer = registry.get_plugin("classifier", config.DEFAULT_CLASSIFIER).parts()["clusterer"]
    assert printed["clusterer"]["name"] == default_clusterer["name"]  # the default classifier's part, options included
    assert all(printed["clusterer"][k] == v for k, v in default_clusterer.items() if k != "name")
    # the printed config is a valid --config file; the command line still overrides it
    printed["run"] = str(tmp_path / "from_yaml")
    printed["quiet"] = True
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(printed))
    assert cli.main(["fit", "--config", str(cfg), "--n_clusters", "3"]) == 0
    written = yaml.safe_load((tmp_path / "from_yaml" / "config.yaml").read_text())
    assert written["localizer"]["window"] == 5 and written["n_clusters"] == 3
    assert json.loads((tmp_path / "from_yaml" / "summary.json").read_text())["n_clusters"] == 3


def test_short_yaml_config_with_plugin_names(tmp_path, example_data, capsys):
    cfg = tmp_path / "short.yaml"
    cfg.write_text(f"data: {example_data}\nlocalizer: color-stats\nclusterer: kmeans\nn_clusters: 4\ninput_size: 64\nquiet: true\nrun: {tmp_path / 'run'}\n")
    assert cli.main(["fit", "--config", str(cfg)]) == 0
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["clusterer"]["name"] == "kmeans"


def test_stage_name_option_switches_the_plugin_and_its_options(tmp_path, example_data):
    """``--clusterer.name kmeans`` is the same as ``--clusterer kmeans``: kmeans's options, not ward's."""
    run = tmp_path / "run"
    assert cli.main(["fit", "--data", str(example_data), *FAST_FIT, "--clusterer.name", "kmeans", "--clusterer.backend", "minibatch", "--run", str(run)]) == 0
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["clusterer"]["name"] == "kmeans" and written["clusterer"]["backend"] == "minibatch"
    assert "n_micro" not in written["clusterer"]


def test_help_and_list(capsys):
    assert cli.main([]) == 2
    assert "usage: anomaly-cluster" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["list", "--kind", "clusterer"]) == 0
    out = capsys.readouterr().out
    assert "ward" in out and "anomaly-clustering" in out
    assert cli.main(["fit", "--localizer", "color-stats", "--help"]) == 0
    assert "--localizer.window" in capsys.readouterr().out


def test_console_script_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "anomaly_clustering.cli", "list", "--kind", "binarizer"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "otsu" in proc.stdout


def _readme_commands() -> list[list[str]]:
    """The ``anomaly-cluster`` commands of the README's quick-start block (the first ```bash block)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in block.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part.strip())
            if words and words[0] == "anomaly-cluster":
                commands.append(words[1:])
    return commands


@pytest.mark.skipif(not (REPO / "README.md").exists(), reason="README.md not written yet")
def test_readme_quick_start(tmp_path, monkeypatch, capsys):
    """Runs the README's quick-start commands as written, with only the image count and size made small."""
    commands = _readme_commands()
    assert [c[0] for c in commands][:3] == ["example", "fit", "evaluate"], commands
    monkeypatch.chdir(tmp_path)
    small = {"example": ["--per_kind", "3", "--n_good", "3", "--size", "64"], "fit": ["--input_size", "64", "--quiet", "true"]}
    for words in commands:
        code = cli.main([*words, *small.get(words[0], [])])
        assert code == 0, f"anomaly-cluster {' '.join(words)}: {capsys.readouterr().err}"
    out = capsys.readouterr().out
    assert "NMI" in out
