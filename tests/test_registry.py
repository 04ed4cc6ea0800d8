"""Plugin discovery through entry points: built-ins, broken plugins, wrong interfaces and versions, name clashes."""

from __future__ import annotations

import pytest

from anomaly_clustering import cli, registry
from anomaly_clustering.interfaces import Clusterer, Localizer

GOOD_LOCALIZER = """
import numpy as np
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps

class Flat(Localizer):
    '''A flat test localizer.'''

    def __init__(self, value: float = 0.0):
        self.value = value

    def predict(self, images):
        n = len(images)
        return AnomalyMaps(np.full((n, 8, 8), self.value, np.float32), np.zeros(n, np.float32), np.full((n, 2), 8))
"""

RAISES_ON_IMPORT = """
raise RuntimeError("boom: this plugin cannot be imported")
"""

NOT_A_STAGE = """
class NotALocalizer:
    '''Has predict but does not subclass the interface.'''

    def predict(self, images):
        return None
"""

WRONG_VERSION = """
from anomaly_clustering.plugins.common.clusterers import KMeansClusterer

class FutureKMeans(KMeansClusterer):
    '''Written against a future clusterer interface.'''

    interface_version = 99
"""

ABSTRACT = """
from anomaly_clustering.interfaces import Localizer

class Unfinished(Localizer):
    '''Forgot to implement predict.'''
"""

LOC = registry.GROUPS["localizer"]
CLU = registry.GROUPS["clusterer"]


def test_builtin_plugins_are_discovered_with_their_distribution():
    info = registry.discover()["localizer"]["color-stats"]
    assert info.ok, info.status
    assert info.distribution == "anomaly-clustering"
    assert info.version and info.version != "?"
    assert registry.get_plugin("clusterer", "ward").__name__ == "WardClusterer"
    assert issubclass(registry.get_plugin("localizer", "color-stats"), Localizer)
    for kind in ("ward", "kmeans", "gmm", "spectral"):
        assert registry.discover()["clusterer"][kind].ok
    assert registry.discover()["classifier"]["average"].ok


def test_unknown_name_lists_available_plugins():
    with pytest.raises(registry.PluginError, match=r"--localizer no-such-thing: no such localizer; available: .*color-stats"):
        registry.get_plugin("localizer", "no-such-thing")
    with pytest.raises(registry.PluginError, match="unknown plugin kind"):
        registry.get_plugin("widget", "x")


def test_create_rejects_unknown_option_naming_it():
    assert registry.create("clusterer", "kmeans", n_clusters=3).n_clusters == 3
    with pytest.raises(registry.PluginError, match=r"--clusterer\.bogus: 'kmeans' has no option 'bogus'.*n_init"):
        registry.create("clusterer", "kmeans", bogus=1)


def test_plugin_raising_on_import_is_broken_and_breaks_nothing(fake_dist, capsys):
    fake_dist(
        "acme-broken", "1.2.3",
        {LOC: {"acme-boom": "acme_boom:Boom", "acme-flat": "acme_flat_ok:Flat"}},
        {"acme_boom": RAISES_ON_IMPORT, "acme_flat_ok": GOOD_LOCALIZER},
    )
    d = registry.discover()["localizer"]
    boom = d["acme-boom"]
    assert not boom.ok
    assert boom.distribution == "acme-broken" and boom.version == "1.2.3"
    assert "failed to import acme_boom:Boom" in boom.error and "boom: this plugin cannot be imported" in boom.error
    # the other plugin of the same distribution and the built-ins still work
    assert d["acme-flat"].ok and d["acme-flat"].summary == "A flat test localizer."
    assert d["color-stats"].ok
    with pytest.raises(registry.PluginError, match=r"--localizer acme-boom: plugin from acme-broken 1\.2\.3 is broken: failed to import"):
        registry.get_plugin("localizer", "acme-boom")
    # `anomaly-cluster list` still works and shows the broken one with its reason
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    boom_line = next(line for line in out.splitlines() if "acme-boom" in line)
    assert "BROKEN" in boom_line and "acme-broken" in boom_line and "RuntimeError" in boom_line
    flat_line = next(line for line in out.splitlines() if "acme-flat" in line)
    assert " ok " in flat_line
    assert "color-stats" in out
    # --json carries the status too
    assert cli.main(["list", "--kind", "localizer", "--json", "true"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["acme-boom"]["status"].startswith("broken: failed to import")
    assert rows["acme-flat"]["status"] == "ok"


def test_object_not_implementing_interface_is_broken(fake_dist):
    fake_dist("acme-odd", "0.1", {LOC: {"acme-odd": "acme_odd:NotALocalizer"}}, {"acme_odd": NOT_A_STAGE})
    info = registry.discover()["localizer"]["acme-odd"]
    assert not info.ok
    assert "does not implement the Localizer interface" in info.error


def test_abstract_plugin_is_broken_naming_the_missing_method(fake_dist):
    fake_dist("acme-abstract", "0.1", {LOC: {"acme-unfinished": "acme_abstract:Unfinished"}}, {"acme_abstract": ABSTRACT})
    info = registry.discover()["localizer"]["acme-unfinished"]
    assert not info.ok and "is abstract: implement predict" in info.error


def test_wrong_interface_version_is_broken_with_clear_reason(fake_dist):
    fake_dist("acme-future", "2.0.0", {CLU: {"acme-future": "acme_future:FutureKMeans"}}, {"acme_future": WRONG_VERSION})
    info = registry.discover()["clusterer"]["acme-future"]
    assert not info.ok
    assert info.error == "declares clusterer interface version 99, this anomaly-clustering provides version 1"
    with pytest.raises(registry.PluginError, match="interface version 99"):
        registry.create("clusterer", "acme-future")


def test_classifier_entry_point_must_be_a_preset(fake_dist):
    fake_dist("acme-cls", "0.1", {registry.GROUPS["classifier"]: {"acme-cls": "acme_cls:PRESET"}}, {"acme_cls": "PRESET = {'representation': 'average'}\n"})
    info = registry.discover()["classifier"]["acme-cls"]
    assert not info.ok and "not a ClassifierPreset" in info.error


def test_name_clash_names_both_distributions(fake_dist, capsys):
    fake_dist("acme-one", "1.0", {LOC: {"acme-dup": "acme_one:Flat"}}, {"acme_one": GOOD_LOCALIZER})
    fake_dist("acme-two", "2.0", {LOC: {"acme-dup": "acme_two:Flat"}}, {"acme_two": GOOD_LOCALIZER})
    info = registry.discover()["localizer"]["acme-dup"]
    assert not info.ok and info.status.startswith("clash:")
    with pytest.raises(registry.PluginError) as err:
        registry.get_plugin("localizer", "acme-dup")
    msg = str(err.value)
    assert "acme-one" in msg and "acme-two" in msg and "two installed packages" in msg
    # a clash with a built-in name also names both
    fake_dist("acme-three", "3.0", {CLU: {"ward": "acme_three:FutureKMeans"}}, {"acme_three": WRONG_VERSION})
    with pytest.raises(registry.PluginError, match=r"anomaly-clustering.*acme-three|acme-three.*anomaly-clustering"):
        registry.get_plugin("clusterer", "ward")
    assert cli.main(["list", "--kind", "localizer"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "acme-dup" in line)
    assert "BROKEN" in line and "acme-one" in line and "acme-two" in line


def test_fit_with_broken_plugin_is_one_line_error(fake_dist, capsys, example_data, tmp_path):
    fake_dist("acme-broken", "1.2.3", {LOC: {"acme-boom": "acme_boom2:Boom"}}, {"acme_boom2": RAISES_ON_IMPORT})
    run = tmp_path / "run"
    code = cli.main(["fit", "--data", str(example_data), "--localizer", "acme-boom", "--run", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "acme-boom" in err and "acme-broken" in err and "broken" in err
    assert not (run / "clusters.csv").exists()


def test_refresh_forgets_removed_plugins(fake_dist):
    fake_dist("acme-temp", "0.1", {LOC: {"acme-temp": "acme_temp:Flat"}}, {"acme_temp": GOOD_LOCALIZER})
    assert "acme-temp" in registry.discover()["localizer"]
    import sys

    site = next(p for p in sys.path if p.endswith("site_0"))
    sys.path.remove(site)
    registry.refresh()
    assert "acme-temp" not in registry.discover()["localizer"]
    assert registry.discover()["localizer"]["color-stats"].ok


def test_stage_summary_is_first_docstring_line():
    cls = registry.get_plugin("clusterer", "ward")
    assert issubclass(cls, Clusterer)
    assert cls.summary() == (cls.__doc__ or "").strip().splitlines()[0].strip()
    assert registry.discover()["clusterer"]["ward"].summary == cls.summary()
