"""The Python API (``anomaly_clustering.AnomalyClustering``, ``load_run``) and the one merge rule it shares with the CLI."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from anomaly_clustering import AnomalyClustering, load_run, resolve_config
from anomaly_clustering.config import ConfigError, config_from_args
from anomaly_clustering.registry import PluginError

from conftest import FAST_FIT

CACHE = FAST_FIT[FAST_FIT.index("--cache_dir") + 1]


def _fast_model(**kwargs) -> AnomalyClustering:
    return AnomalyClustering(localizer="color-stats", n_clusters=4, input_size=64, cache_dir=CACHE, **kwargs)


def _built(config) -> dict:
    from anomaly_clustering import registry
    from anomaly_clustering.config import STAGES, merge_stage_options

    out = {}
    for stage in STAGES:
        spec = config.spec(stage)
        comp = registry.create(stage, spec.name, **merge_stage_options(stage, spec.name, spec.options, config.shared, config.n_clusters))
        out[stage] = (spec.name, comp.get_params(deep=False))
    return out


def test_api_and_cli_build_the_same_config() -> None:
    argv = ["--data", "x", "--localizer", "color-stats", "--classifier", "blind-lca", "--representation.epochs", "2", "--seed", "5", "--input_size", "64", "--n_clusters", "3"]
    cli_config, _ = config_from_args(argv)
    api_config = AnomalyClustering("color-stats", "blind-lca", 3, seed=5, input_size=64, representation__epochs=2).resolve()
    assert _built(api_config) == _built(cli_config)  # the same plugins with the same parameters (and cache keys)
    assert (api_config.n_clusters, api_config.seed, api_config.shared) == (cli_config.n_clusters, cli_config.seed, cli_config.shared)
    rep = api_config.representation
    assert rep.name == "contrastive-head" and rep.options["epochs"] == 2 and rep.options["seed"] == 5  # given, shared
    assert api_config.binarizer.name == "quantile-heuristic"  # from the preset


def test_merge_rule_preset_given_shared() -> None:
    conf = resolve_config("anomaly-context", clusterer={"name": "kmeans", "seed": 9}, seed=3)
    assert conf.representation.options["context_weight"] == 1.0  # the preset's option
    assert conf.clusterer.options["seed"] == 9  # given per stage: the shared seed does not replace it
    assert resolve_config("anomaly-context", clusterer="kmeans", seed=3).clusterer.options["seed"] == 3  # shared fills
    assert "seed" not in resolve_config("anomaly-context", clusterer="kmeans").clusterer.options  # plugin default stays
    other = resolve_config("anomaly-context", representation="average")
    assert "context_weight" not in other.representation.options  # another plugin than the preset's: no preset options


def test_bad_options_fail_before_reading_images(tmp_path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(PluginError, match="nope"):
        _fast_model(localizer__nope=1).fit(missing)
    with pytest.raises(ConfigError, match="stage options"):
        _fast_model(nope=1).fit(missing)
    with pytest.raises(ConfigError, match="n_clusters"):
        AnomalyClustering(localizer="color-stats", n_clusters="many").fit(missing)
    with pytest.raises(PluginError):
        AnomalyClustering(localizer="no-such-localizer").fit(missing)


def test_fit_result_matches_the_cli_run(example_data, fitted_run, tmp_path) -> None:
    result = _fast_model().fit(example_data)
    with open(fitted_run / "clusters.csv") as fh:
        cli_labels = {row["image"]: int(row["cluster"]) for row in csv.DictReader(fh)}
    assert [cli_labels[n] for n in result.names] == result.labels.tolist()
    n = len(result.names)
    assert result.maps.shape[0] == n and result.masks.shape == result.maps.shape and result.masks.dtype == bool
    assert result.scores.shape == (n,) and result.n_clusters == 4
    frame = result.to_dataframe()
    assert list(frame["cluster"]) == result.labels.tolist() and list(frame["image"]) == list(result.names)
    run = result.save(tmp_path / "run")
    assert (run / "clusters.csv").exists() and (run / "config.yaml").exists()
    fitted = load_run(run)
    again = fitted.predict(example_data)
    assert np.array_equal(again.labels, result.model.predict(example_data).labels)
    assert np.allclose(again.scores, result.scores)
    out = again.save(tmp_path / "pred")
    assert (out / "predictions.csv").exists()


def test_fit_accepts_an_image_set(example_data) -> None:
    from anomaly_clustering.data import load_image_set

    images = load_image_set(str(example_data))
    assert _fast_model().fit(images).labels.tolist() == _fast_model().fit(os.fspath(example_data)).labels.tolist()


def test_invalid_option_value_fails_before_work(tmp_path) -> None:
    with pytest.raises(ConfigError, match="normalize_maps"):
        AnomalyClustering(localizer="color-stats", classifier="anomaly-context", representation__normalize_maps="bogus").fit(tmp_path / "no-such-folder")
    with pytest.raises(ConfigError, match="view_transform"):  # a plugin that checks its parameters in _validate()
        AnomalyClustering(localizer="mutual", classifier="multiview-anomaly-pca", representation__view_transform="bogus").fit(tmp_path / "none")
    with pytest.raises(ConfigError, match="self_weight"):
        AnomalyClustering(localizer="mutual", localizer__self_weight=2.0).fit(tmp_path / "none")
    with pytest.raises(ConfigError, match="linkage"):
        AnomalyClustering(localizer="color-stats", clusterer={"name": "agglomerative", "linkage": "median"}).fit(tmp_path / "none")


def test_not_fitted_is_sklearns_error() -> None:
    from sklearn.exceptions import NotFittedError

    from anomaly_clustering import registry
    from anomaly_clustering.testing import example_embeddings

    emb, _ = example_embeddings()
    for name in ("ward", "kmeans", "gmm"):
        with pytest.raises(NotFittedError, match="not fitted"):
            registry.create("clusterer", name, n_clusters=3).predict(emb)
