"""Shared fixtures: one small generated example set and one fitted run per test session, a private stage cache,
and a factory that fakes installed plugin distributions (a ``*.dist-info`` folder on ``sys.path``)."""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Callable

import pytest

# Never touch ~/.cache: every backbone feature and stage cache of the test session lives in a temporary folder.
_SESSION_CACHE = tempfile.mkdtemp(prefix="anomaly_clustering_test_cache_")
os.environ["ANOMALY_CLUSTERING_CACHE"] = _SESSION_CACHE
# Never download: a backbone without local weights is an error in tests, not a hub download.
os.environ["ANOMALY_CLUSTERING_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
atexit.register(shutil.rmtree, _SESSION_CACHE, True)

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: Small settings every CLI test uses: the network-free localizer, small images, 4 clusters.
#: One stage cache for the session (keys hash the images' contents, so sharing it between sets is safe).
FAST_FIT = ["--localizer", "color-stats", "--input_size", "64", "--n_clusters", "4", "--quiet", "true", "--cache_dir", os.path.join(_SESSION_CACHE, "stages")]


@pytest.fixture(scope="module")
def cpu_cache(tmp_path_factory):
    """A test module's own stage cache, on the CPU, quiet: plugin tests that fit real backbones share it."""
    from anomaly_clustering import runtime

    with runtime.settings(quiet=True, cache_dir=str(tmp_path_factory.mktemp("cache")), device="cpu"):
        yield


@pytest.fixture(scope="session")
def example_root(tmp_path_factory) -> Path:
    """The generated example set (MVTec layout, 4 images per kind, 64 px); returns its root (``test`` inside)."""
    from anomaly_clustering.examples import make_example_set

    root = tmp_path_factory.mktemp("example")
    make_example_set(root, per_kind=4, n_good=4, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def example_data(example_root) -> Path:
    return example_root / "test"


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory, example_data) -> Path:
    """One fitted run folder on the example set (color-stats, average, ward, K = 4), shared by read-only tests."""
    from anomaly_clustering import cli

    run = tmp_path_factory.mktemp("runs") / "fitted"
    code = cli.main(["fit", "--data", str(example_data), *FAST_FIT, "--run", str(run)])
    assert code == 0
    return run


def write_fake_distribution(
    site: Path, dist_name: str, version: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]
) -> Path:
    """Write ``<dist>-<version>.dist-info`` (METADATA, entry_points.txt) and the plugin modules under ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return info


@pytest.fixture
def fake_dist(tmp_path) -> Callable[..., Path]:
    """Factory: ``fake_dist(dist_name, version, entry_points, modules)`` installs a fake distribution in-process
    (its folder on ``sys.path``) and refreshes the plugin registry; everything is undone after the test."""
    from anomaly_clustering import registry

    added: list[str] = []
    modules_added: list[str] = []

    def make(dist_name: str, version: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
        site = tmp_path / f"site_{len(added)}"
        write_fake_distribution(site, dist_name, version, entry_points, modules)
        sys.path.insert(0, str(site))
        added.append(str(site))
        modules_added.extend(modules)
        importlib.invalidate_caches()
        registry.refresh()
        return site

    yield make
    for p in added:
        while p in sys.path:
            sys.path.remove(p)
    for m in modules_added:
        sys.modules.pop(m, None)
    importlib.invalidate_caches()
    registry.refresh()


def run_files(run: Path) -> set[str]:
    """Names at the top of a run folder (hidden lock and staging entries left out)."""
    return {p.name for p in run.iterdir() if not p.name.startswith(".")} if run.exists() else set()
