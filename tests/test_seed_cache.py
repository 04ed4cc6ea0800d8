"""Stage caches are shared by runs with different seeds where a stage's result does not depend on the seed: the run
seed enters a stage's cache key only for a component that may draw from the global random generators
(``uses_global_rng``, True unless a plugin declares otherwise)."""

from __future__ import annotations

import numpy as np

from anomaly_clustering.config import resolve_config
from anomaly_clustering.data import load_image_set
from anomaly_clustering.interfaces import Clusterer
from anomaly_clustering.pipeline import Pipeline, uses_global_rng
from anomaly_clustering.plugins.anomalib_models.patchcore import PatchcoreLocalizer
from anomaly_clustering.plugins.common.clusterers import WardClusterer


def _fit(images, cache, seed: int):
    """fca (deterministic) → otsu → average → kmeans (seeded by the run seed through its ``seed`` parameter)."""
    cfg = resolve_config(localizer="fca", classifier="average", clusterer="kmeans", n_clusters=3, input_size=64, seed=seed)
    return Pipeline(cfg, cache, quiet=True).fit(images)


def test_seed_independent_stages_are_reused_by_another_seed(tmp_path, example_data) -> None:
    images = load_image_set(example_data)
    first = _fit(images, tmp_path / "cache", 0)
    second = _fit(images, tmp_path / "cache", 1)
    assert second.cache_hits == {"localizer": True, "binarizer": True, "representation": True, "clusterer": False}
    assert second.keys["localizer"] == first.keys["localizer"] and second.keys["clusterer"] != first.keys["clusterer"]
    # what the shared stages hand on is what a run with seed 1 computes from scratch
    fresh = _fit(images, tmp_path / "fresh", 1)
    assert not any(fresh.cache_hits.values())
    np.testing.assert_array_equal(np.asarray(fresh.maps.maps), np.asarray(second.maps.maps))
    np.testing.assert_array_equal(np.asarray(fresh.regions.masks), np.asarray(second.regions.masks))
    np.testing.assert_array_equal(np.asarray(fresh.embeddings.vectors), np.asarray(second.embeddings.vectors))
    np.testing.assert_array_equal(np.asarray(fresh.clustering.labels), np.asarray(second.clustering.labels))
    # and the seed-0 run read back from the cache is the seed-0 run
    again = _fit(images, tmp_path / "cache", 0)
    assert all(again.cache_hits.values())
    np.testing.assert_array_equal(np.asarray(again.clustering.labels), np.asarray(first.clustering.labels))


class _Undeclared(Clusterer):
    """A third-party clusterer that says nothing about its randomness."""

    def __init__(self, n_clusters: int = 2):
        self.n_clusters = n_clusters

    def fit_predict(self, embeddings):  # pragma: no cover - only keyed here
        raise NotImplementedError


class _NoInterface:
    """Not even a subclass of the interfaces: no attribute at all."""

    def get_params(self, deep: bool = False) -> dict:
        return {}


def test_run_seed_stays_in_the_key_of_a_component_that_does_not_declare_itself(tmp_path) -> None:
    pipes = [Pipeline(resolve_config(localizer="color-stats", classifier="average", seed=s), tmp_path) for s in (0, 1)]
    assert uses_global_rng(_Undeclared()) and uses_global_rng(_NoInterface()) and not uses_global_rng(WardClusterer())
    for component in (_Undeclared(), _NoInterface()):
        assert pipes[0]._key("clusterer", component, "input") != pipes[1]._key("clusterer", component, "input")
    ward = WardClusterer()
    assert pipes[0]._key("clusterer", ward, "input") == pipes[1]._key("clusterer", ward, "input")


def test_patchcore_declares_the_global_rng_only_for_anomalibs_sampler() -> None:
    assert not PatchcoreLocalizer(coreset_method="fast").uses_global_rng
    assert PatchcoreLocalizer(coreset_method="anomalib").uses_global_rng
