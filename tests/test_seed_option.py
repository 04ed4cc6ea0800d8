"""`--seed` reaches every stage that takes a seed; without it each plugin keeps its own default (API and CLI alike)."""

from __future__ import annotations

from anomaly_clustering import cli
from anomaly_clustering.pipeline import Pipeline, PipelineConfig, StageSpec


def _stage_options(argv: list[str], tmp_path) -> dict:
    args, chosen = cli._prescan(["--data", str(tmp_path), "--localizer", "color-stats", "--classifier", "average", "--clusterer", "kmeans", *argv])
    cfg = cli._parse(cli.build_fit_parser(chosen), args)
    return Pipeline(cli._pipeline_config(cfg), tmp_path).stage_options("clusterer")


def test_global_seed_fills_plugin_seeds(tmp_path) -> None:
    assert _stage_options([], tmp_path)["seed"] == 42  # KMeansClusterer's own default
    assert _stage_options(["--seed", "5"], tmp_path)["seed"] == 5
    assert _stage_options(["--seed", "5", "--clusterer.seed", "9"], tmp_path)["seed"] == 9


def test_api_keeps_plugin_default_seed_unless_shared(tmp_path) -> None:
    base = dict(localizer=StageSpec("color-stats"), binarizer=StageSpec("otsu"), representation=StageSpec("average"), clusterer=StageSpec("kmeans"))
    assert Pipeline(PipelineConfig(**base, seed=3), tmp_path).stage_options("clusterer").get("seed", 42) == 42
    assert Pipeline(PipelineConfig(**base, shared={"seed": 3}), tmp_path).stage_options("clusterer")["seed"] == 3
