"""The stage cache: a rerun reuses every stage, a changed option recomputes only its stage and those after it, a
changed image recomputes everything, and a corrupt cache entry is detected and recomputed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_clustering import cli
from conftest import FAST_FIT

STAGES = ("localizer", "binarizer", "representation", "clusterer")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, example_data) -> Path:
    ws = tmp_path_factory.mktemp("cache_ws")
    shutil.copytree(example_data, ws / "data")
    return ws


def fit(ws: Path, run: str, *extra: str) -> dict:
    code = cli.main(["fit", "--data", str(ws / "data"), *FAST_FIT, "--run", str(ws / run), "--cache_dir", str(ws / "cache"), *extra])
    assert code == 0
    return json.loads((ws / run / "summary.json").read_text())


def test_rerun_reuses_every_stage_then_changes_recompute_only_what_changed(workspace, capsys):
    first = fit(workspace, "a")
    assert first["cache_reused"] == {s: False for s in STAGES}
    labels_first = (workspace / "a" / "clusters.csv").read_text()
    capsys.readouterr()

    again = fit(workspace, "a", "--quiet", "false")
    assert again["cache_reused"] == {s: True for s in STAGES}
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"[{stage}]" in out and "reused" in out.split(f"[{stage}]")[1].splitlines()[0]
    assert all("reused" in line for line in again["log"])
    assert (workspace / "a" / "clusters.csv").read_text() == labels_first

    # a representation option: representation and clusterer recompute, localizer and binarizer are reused
    changed = fit(workspace, "b", "--representation.context_size", "96")
    assert changed["cache_reused"] == {"localizer": True, "binarizer": True, "representation": False, "clusterer": False}

    # a clusterer option: only the clusterer
    changed = fit(workspace, "c", "--clusterer", "kmeans")
    assert changed["cache_reused"] == {"localizer": True, "binarizer": True, "representation": True, "clusterer": False}

    # a changed image: everything recomputes
    img_path = sorted((workspace / "data" / "good").glob("*.png"))[0]
    arr = np.asarray(Image.open(img_path)).copy()
    arr[:8, :8] = 255 - arr[:8, :8]
    Image.fromarray(arr).save(img_path)
    changed = fit(workspace, "a")
    assert changed["cache_reused"] == {s: False for s in STAGES}


def test_corrupt_cache_entry_is_detected_and_recomputed(workspace):
    fit(workspace, "d")
    again = fit(workspace, "d")
    assert all(again["cache_reused"].values())
    # truncate the stored embedding vectors of the cached representation stage
    key = json.loads((workspace / "d" / "model" / "pipeline.json").read_text())["keys"]["representation"]
    vectors = workspace / "cache" / "representation" / key / "record" / "vectors.npy"
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) // 2])
    redone = fit(workspace, "d")
    assert redone["cache_reused"] == {"localizer": True, "binarizer": True, "representation": False, "clusterer": True}
    # a flipped byte with the size unchanged is caught by the checksum too
    key = json.loads((workspace / "d" / "model" / "pipeline.json").read_text())["keys"]["localizer"]
    maps = workspace / "cache" / "localizer" / key / "record" / "maps.npy"
    raw = bytearray(maps.read_bytes())
    raw[-1] ^= 0xFF
    maps.write_bytes(bytes(raw))
    redone = fit(workspace, "d")
    assert redone["cache_reused"]["localizer"] is False
    assert redone["n_clusters"] == 4


def test_editing_a_plugins_source_changes_its_cache_identity(tmp_path, monkeypatch):
    """The stage key covers the plugin's code: an edit within one version cannot reuse stale outputs."""
    import sys

    from anomaly_clustering.pipeline import source_digest

    pkg = tmp_path / "edited_plugin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text("SCALE = 1.0\n")
    (pkg / "helper.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_digest("edited_plugin_pkg.model")
    assert before == source_digest("edited_plugin_pkg.model")  # stable
    (pkg / "helper.py").write_text("def f():\n    return 2\n")  # a helper beside the plugin's module counts too
    source_digest.cache_clear()
    assert source_digest("edited_plugin_pkg.model") != before
    for name in [m for m in sys.modules if m.startswith("edited_plugin_pkg")]:
        del sys.modules[name]


def test_editing_a_sibling_folder_a_plugin_imports_changes_its_cache_identity(tmp_path, monkeypatch):
    """A helper in another folder of the plugins package (``from ..common import helper``) is part of the key too;
    a folder the plugin does not import is not."""
    import sys

    from anomaly_clustering.pipeline import source_digest

    pkg = tmp_path / "sibling_plugins_pkg"
    for folder in ("method", "common", "other"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "method" / "model.py").write_text("from ..common import helper\n\nSCALE = helper.f()\n")
    (pkg / "common" / "helper.py").write_text("def f():\n    return 1\n")
    (pkg / "other" / "unrelated.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_digest("sibling_plugins_pkg.method.model")
    (pkg / "other" / "unrelated.py").write_text("X = 2\n")
    source_digest.cache_clear()
    assert source_digest("sibling_plugins_pkg.method.model") == before, "a folder it does not import leaves the key alone"
    (pkg / "common" / "helper.py").write_text("def f():\n    return 2\n")
    source_digest.cache_clear()
    assert source_digest("sibling_plugins_pkg.method.model") != before, "the imported helper's edit changes the key"
    for name in [m for m in sys.modules if m.startswith("sibling_plugins_pkg")]:
        del sys.modules[name]
