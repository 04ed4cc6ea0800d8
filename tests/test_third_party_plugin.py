"""A third-party plugin package (examples/third_party_plugin) installed with pip, seen by `anomaly-cluster list`,
used by `fit`, and checked with the conformance kit; plus the failures a plugin author meets and their messages.

The example is pip-installed (``--no-deps --no-build-isolation``, offline) from a copy in a temporary folder into a
private ``--target`` site folder that the subprocesses get on ``PYTHONPATH``: the same wheel and entry points as a
plain install, without changing the shared virtual environment other processes may be using; the fixture removes
it afterwards.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomaly_clustering import testing
from anomaly_clustering.interfaces import Binarizer, Clusterer, Localizer, Representation
from anomaly_clustering.records import AnomalyMaps, Clustering, Embeddings, Regions
from conftest import FAST_FIT, write_fake_distribution

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "third_party_plugin"


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("acme")
    src = work / "src_copy"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site.glob("acme_anomaly_plugins-0.1.0.dist-info"))
    yield site
    shutil.rmtree(site, ignore_errors=True)
    assert not list(EXAMPLE.glob("*.egg-info")) and not (EXAMPLE / "build").exists()


def cli(*args: str, sites: tuple[Path, ...] = (), timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "anomaly_clustering.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_list_shows_installed_plugins_with_distribution(acme_site):
    proc = cli("list", sites=(acme_site,))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line.split() for line in proc.stdout.splitlines() if line.startswith(("localizer", "clusterer"))}
    assert rows["acme-gradient"][:5] == ["localizer", "acme-gradient", "acme-anomaly-plugins", "0.1.0", "ok"]
    assert rows["acme-cosine"][:5] == ["clusterer", "acme-cosine", "acme-anomaly-plugins", "0.1.0", "ok"]
    assert "Deviation of the local gradient magnitude" in proc.stdout
    assert rows["color-stats"][2] == "anomaly-clustering"  # the built-ins are still there


def test_fit_and_predict_with_installed_plugins(acme_site, example_data, tmp_path):
    run = tmp_path / "run"
    fast = [a for a in FAST_FIT if a != "color-stats" and a != "--localizer"]
    proc = cli("fit", "--data", str(example_data), "--localizer", "acme-gradient", "--clusterer", "acme-cosine",
               "--localizer.smoothing", "3", *fast, "--run", str(run), sites=(acme_site,))
    assert proc.returncode == 0, proc.stderr
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["localizer"]["name"] == "acme-gradient" and config["localizer"]["smoothing"] == 3
    assert config["clusterer"]["name"] == "acme-cosine"
    lines = (run / "clusters.csv").read_text().splitlines()
    assert len(lines) == 17 and {line.split(",")[1] for line in lines[1:]} == {"0", "1", "2", "3"}
    proc = cli("fit", "--localizer", "acme-gradient", "--help", sites=(acme_site,))
    assert "--localizer.smoothing" in proc.stdout and "box filter" in proc.stdout  # docstring reaches the help


def test_example_package_passes_conformance_kit(acme_site, monkeypatch):
    monkeypatch.syspath_prepend(str(acme_site))
    tests = runpy.run_path(str(EXAMPLE / "tests" / "test_acme_plugins.py"))
    tests["test_gradient_localizer_conforms"]()
    tests["test_cosine_clusterer_conforms"]()
    for mod in [m for m in sys.modules if m.startswith("acme_anomaly_plugins")]:
        monkeypatch.delitem(sys.modules, mod)


def test_broken_and_clashing_plugins_next_to_installed_ones(acme_site, tmp_path, example_data):
    other = tmp_path / "other_site"
    write_fake_distribution(
        other, "other-plugins", "9.9",
        {"anomaly_clustering.localizers": {"acme-gradient": "other_plugins:Copy", "other-boom": "other_boom:Boom"}},
        {"other_plugins": "from anomaly_clustering.plugins.common.color_stats import ColorStatsLocalizer as Copy\n",
         "other_boom": "import not_a_module_that_exists\n"},
    )
    proc = cli("list", "--kind", "localizer", sites=(acme_site, other))
    assert proc.returncode == 0, proc.stderr
    boom = next(line for line in proc.stdout.splitlines() if "other-boom" in line)
    assert "BROKEN" in boom and "No module named 'not_a_module_that_exists'" in boom
    clash = next(line for line in proc.stdout.splitlines() if "acme-gradient" in line)
    assert "BROKEN" in clash and "acme-anomaly-plugins" in clash and "other-plugins" in clash
    assert any(line.split()[1] == "color-stats" and " ok " in line for line in proc.stdout.splitlines()[1:])
    proc = cli("fit", "--data", str(example_data), "--localizer", "acme-gradient", "--run", str(tmp_path / "run"), sites=(acme_site, other))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "acme-anomaly-plugins" in err[0] and "other-plugins" in err[0] and "uninstall one" in err[0]
    assert not (tmp_path / "run" / "clusters.csv").exists()


# ------------------------------------------------------------------------- the kit catches broken plugins
class ShortLocalizer(Localizer):
    """Returns one map too few."""

    def __init__(self, size: int = 16):
        self.size = size

    def predict(self, images):
        n = len(images) - 1
        return AnomalyMaps(np.zeros((n, self.size, self.size), np.float32), np.zeros(n), np.full((n, 2), 64))


class WrongSizeLocalizer(ShortLocalizer):
    """Claims every image is 16×16."""

    def predict(self, images):
        n = len(images)
        return AnomalyMaps(np.zeros((n, 16, 16), np.float32), np.zeros(n), np.full((n, 2), 16))


class NoisyLocalizer(ShortLocalizer):
    """Unseeded randomness."""

    def predict(self, images):
        n = len(images)
        return AnomalyMaps(np.random.default_rng().random((n, 8, 8), dtype=np.float32), np.zeros(n), np.full((n, 2), 64))


class UntypedLocalizer(ShortLocalizer):
    """An option without a type hint."""

    def __init__(self, size=16):
        self.size = size


class RenamingLocalizer(ShortLocalizer):
    """Logic in __init__: stores a parameter under another value."""

    def __init__(self, size: int = 16):
        self.size = size * 2


class StatefulLocalizer(WrongSizeLocalizer):
    """Learned state without the trailing underscore."""

    def fit(self, images, normal_images=None):
        self.mean = 1.0
        return self


class NoSelfLocalizer(WrongSizeLocalizer):
    """fit forgets to return self."""

    def fit(self, images, normal_images=None):
        return None


class FullMaskBinarizer(Binarizer):
    """Masks of the wrong shape."""

    def __init__(self, min_area: int = 1):
        self.min_area = min_area

    def transform(self, maps, images):
        return Regions(np.ones((len(maps), 4, 4), bool), np.zeros(len(maps)))


class MutatingBinarizer(FullMaskBinarizer):
    """Normalises the maps in place."""

    def transform(self, maps, images):
        maps.maps[...] = 0
        return Regions(np.zeros(maps.maps.shape, bool), np.zeros(len(maps)))


class HalfRepresentation(Representation):
    """Embeds only the first half of the images."""

    def __init__(self, dim: int = 4):
        self.dim = dim

    def transform(self, images, maps, regions):
        return Embeddings.per_image(np.ones((len(images) // 2, self.dim), np.float32))


class ConstantClusterer(Clusterer):
    """Puts every image in one cluster but claims n_clusters."""

    def __init__(self, n_clusters: int = 2):
        self.n_clusters = n_clusters

    def fit_predict(self, embeddings):
        return Clustering(np.zeros(embeddings.n_images, int), self.n_clusters)


class FloatLabelClusterer(ConstantClusterer):
    """Labels as floats, one short."""

    def fit_predict(self, embeddings):
        return Clustering(np.zeros(embeddings.n_images - 1), self.n_clusters)


@pytest.mark.parametrize(
    "check,plugin,message",
    [
        (testing.check_localizer, ShortLocalizer, r"ShortLocalizer: returned 7 maps for 8 images"),
        (testing.check_localizer, WrongSizeLocalizer, r"image_sizes must be each image's \(height, width\)"),
        (testing.check_localizer, NoisyLocalizer, r"not deterministic under a fixed seed: maps differs"),
        (testing.check_localizer, UntypedLocalizer, r"parameter 'size' has no type hint"),
        (testing.check_localizer, RenamingLocalizer, r"clone\(\) raised RuntimeError: Cannot clone object RenamingLocalizer"),
        (testing.check_localizer, StatefulLocalizer, r"fit set attribute\(s\) \['mean'\] that do not end in '_'"),
        (testing.check_localizer, NoSelfLocalizer, r"fit must return self"),
        (testing.check_binarizer, FullMaskBinarizer, r"masks must have the maps' shape \(8, 32, 32\), got \(8, 4, 4\)"),
        (testing.check_binarizer, MutatingBinarizer, r"modified its input maps.maps in place"),
        (testing.check_representation, HalfRepresentation, r"returned embeddings for n_images=4, expected 8"),
        (testing.check_clusterer, ConstantClusterer, r"recovers well-separated clusters with ARI 0.000"),
        (testing.check_clusterer, FloatLabelClusterer, r"labels must have one entry per image, shape \(24,\), got \(23,\)"),
        (testing.check_localizer, FullMaskBinarizer, r"does not subclass anomaly_clustering.interfaces.Localizer"),
        (testing.check_classifier, {"representation": "average"}, r"not an anomaly_clustering.interfaces.ClassifierPreset"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if not isinstance(v, str) else None,
)
def test_conformance_kit_catches_broken_plugins(check, plugin, message):
    with pytest.raises(testing.ConformanceError, match=message):
        check(plugin)


def test_conformance_kit_checks_preset_parts():
    from anomaly_clustering.interfaces import ClassifierPreset

    good = ClassifierPreset(representation="average", clusterer={"name": "kmeans", "n_init": 2}, description="ok")
    assert testing.check_classifier(good) is good
    with pytest.raises(testing.ConformanceError, match="clusterer 'kmeans'.*has no option 'bogus'"):
        testing.check_classifier(ClassifierPreset(representation="average", clusterer={"name": "kmeans", "bogus": 1}, description="x"))
    with pytest.raises(testing.ConformanceError, match="no such representation"):
        testing.check_classifier(ClassifierPreset(representation="nope", description="x"))
