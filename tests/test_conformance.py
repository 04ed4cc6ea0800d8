"""Every registered plugin passes the conformance kit (``anomaly_clustering.testing``) on tiny inputs.

A built-in plugin that does not import (an anomalib upgrade that breaks ``ncd``, a missing dependency) fails here:
the registry lists it as broken, and this test asserts every built-in one is ok. Plugins of other installed
distributions are checked the same way.
"""

from __future__ import annotations

import inspect

import pytest

from anomaly_clustering import registry, testing

#: Small options so that each check stays a few seconds on a CPU; options a plugin does not take are dropped.
SMALL = {"input_size": 64}
TINY: dict[tuple[str, str], dict] = {
    ("localizer", "fca-vae"): {"vae_iterations": 10, "vae_batch_pixels": 256, "pool_pixels": 4096, "latent": 16},
    ("localizer", "musc"): {"max_reference_images": 8},
    ("localizer", "fca-mutual"): {"member_options": {"fca-vae": {"vae_iterations": 10, "vae_batch_pixels": 256, "latent": 16}, "mutual": {"reference_images": 4}}},
    ("localizer", "fca-nearest"): {"member_options": {
        "fca-vae": {"vae_iterations": 10, "vae_batch_pixels": 256, "latent": 16},
        "mutual": {"degrees": (1,), "pool": 2, "normalize": "l2", "quantile": 1e-6, "sigma": 0.0, "map_size": 8, "reference_images": 4}}},
    ("localizer", "anomalib"): {"max_epochs": 1, "batch_size": 8},
    ("representation", "contrastive-head"): {"epochs": 1, "n_self": 4, "n_pool": 8, "n_counter_images": 2, "batch_size": 4},
    ("representation", "mgvit-ncd"): {
        "epochs": 1, "repeats": 1, "width": 32, "depth": 1, "attention_heads": 2, "mask_layers": 1, "n_heads": 1,
        "batch_size": 8, "n_views": 2, "source_size": 64, "cache_views": False, "n_clusters": 3,
    },
}
#: Known legitimate deviations from the default checks.
CHECK_ARGS: dict[tuple[str, str], dict] = {
    ("representation", "max-hausdorff"): {"transform_new_images": False},  # transductive: MDS of the fitted set
}
SLOW: set[tuple[str, str]] = {("localizer", "anomalib")}


def _cases():
    for info in registry.plugins():
        marks = [pytest.mark.slow] if (info.kind, info.name) in SLOW else []
        yield pytest.param(info.kind, info.name, id=f"{info.kind}-{info.name}", marks=marks)


def small_options(kind: str, cls: type, name: str) -> dict:
    params = inspect.signature(cls.__init__).parameters
    opts = {k: v for k, v in {**SMALL, **TINY.get((kind, name), {})}.items() if k in params}
    return opts


@pytest.mark.parametrize("kind,name", list(_cases()))
def test_builtin_plugin_conforms(kind, name):
    info = registry.discover()[kind][name]
    assert info.ok, f"{kind} {name} ({info.distribution}): {info.status}"
    if kind == "classifier":
        testing.check_classifier(info.obj)
        return
    testing.check_plugin(kind, info.obj, **small_options(kind, info.obj, name), **CHECK_ARGS.get((kind, name), {}))


def test_kit_accepts_instances_and_reports_bad_options():
    ward = registry.create("clusterer", "ward")
    assert testing.check_clusterer(ward).n_clusters == 3
    with pytest.raises(testing.ConformanceError, match="has no option 'bogus'"):
        testing.check_clusterer(registry.get_plugin("clusterer", "ward"), bogus=1)
    with pytest.raises(ValueError, match="unknown plugin kind"):
        testing.check_plugin("widget", object)
