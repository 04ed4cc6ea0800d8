"""docs/plugins.md is executable: its Python blocks run, its classes pass the conformance kit, and its entry-point
and YAML examples work through the real CLI when the blocks are installed as a (fake) distribution."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import yaml

from anomaly_clustering import cli, registry, testing
from anomaly_clustering.interfaces import STAGE_INTERFACES, ClassifierPreset
from conftest import FAST_FIT

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def test_python_blocks_run_and_define_conforming_plugins(monkeypatch):
    module = types.ModuleType("plugins_doc")  # a real module, so that fitted components pickle
    monkeypatch.setitem(sys.modules, "plugins_doc", module)
    namespace = module.__dict__
    code = blocks("python")
    assert len(code) >= 6
    for block in code:
        exec(compile(block, str(DOC), "exec"), namespace)  # the last block runs every conformance check itself
    defined = {kind: [v for v in namespace.values() if isinstance(v, type) and issubclass(v, base) and v is not base and v.__module__ == "plugins_doc"] for kind, base in STAGE_INTERFACES.items()}
    assert all(defined.values()), defined  # one minimal plugin of each kind
    for kind, classes in defined.items():
        for cls in classes:
            testing.check_plugin(kind, cls)
    presets = [v for v in namespace.values() if isinstance(v, ClassifierPreset)]
    assert presets and all(testing.check_classifier(p) for p in presets)


def test_entry_points_and_yaml_from_the_doc_work_in_the_cli(fake_dist, example_data, tmp_path, capsys):
    source = "\n\n".join(b for b in blocks("python") if "def test_" not in b)
    groups = tomllib.loads(blocks("toml")[0])["project"]["entry-points"]
    entry_points = {group: {name: "docs_plugins:" + value.split(":")[1] for name, value in eps.items()} for group, eps in groups.items()}
    assert set(entry_points) == {registry.GROUPS[k] for k in registry.KINDS}
    fake_dist("my-plugins", "0.0.1", entry_points, {"docs_plugins": source})
    assert all(info.ok for kind in registry.KINDS for info in registry.plugins(kind) if info.distribution == "my-plugins")

    # the fit command of the doc, made small
    run = tmp_path / "run"
    code = cli.main(["fit", "--data", str(example_data), "--localizer", "brightness", "--binarizer", "quantile99",
                     "--representation", "map-histogram", "--clusterer", "cosine-kmeans", *FAST_FIT[2:], "--run", str(run)])
    assert code == 0, capsys.readouterr().err
    assert (run / "clusters.csv").exists()
    # the preset, and the YAML of the doc
    config = yaml.safe_load(blocks("yaml")[0])
    cfg = tmp_path / "doc.yaml"
    cfg.write_text(yaml.safe_dump(config))
    code = cli.main(["fit", "--data", str(example_data), "--classifier", "average-kmeans", "--config", str(cfg), "--print_config"])
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["localizer"] == {"name": "brightness", "input_size": 256}
    assert printed["clusterer"] == {"name": "cosine-kmeans", "seed": 3}
    assert printed["representation"]["name"] == "average" and printed["classifier"] == "average-kmeans"
    # options come from the signature, help from the docstring
    cli.main(["fit", "--localizer", "brightness", "--help"])
    assert "side of the square maps" in capsys.readouterr().out
