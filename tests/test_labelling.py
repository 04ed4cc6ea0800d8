"""relabel / undo / refit / export / open-set predict on the generated example, and the report's edit controls in
headless Chromium (fill a name, download the edits, apply them)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from anomaly_clustering.cli import main
from anomaly_clustering.labelling import Edits, EditError, LabelState, RunLabels, apply_edits

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
FIT = ["--localizer", "color-stats", "--classifier", "average", "--input_size", "64", "--quiet", "true"]


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelling")
    assert main(["example", str(root / "ex"), "--per_kind", "6", "--n_good", "6", "--size", "96"]) == 0
    assert main(["fit", "--data", str(root / "ex" / "test"), *FIT, "--n_clusters", "4", "--run", str(root / "fitted")]) == 0
    return root


@pytest.fixture()
def run(example: Path, tmp_path: Path) -> Path:
    """A fresh copy of the fitted run (edits change it)."""
    dst = tmp_path / "run"
    shutil.copytree(example / "fitted", dst, ignore=shutil.ignore_patterns("cache", "report"))
    return dst


def _table(run: Path) -> dict[str, tuple[int, str]]:
    with open(run / "labels.csv", newline="") as f:
        return {r["image"]: (int(r["cluster"]), r["name"]) for r in csv.DictReader(f)}


def _majority(run: Path) -> dict[int, str]:
    """Each fitted cluster → its most common true type (the type is the image's folder)."""
    labels = RunLabels(run)
    names = labels.image_names()
    out = {}
    for k in labels.initial().clusters:
        types = [n.split("/")[0] for n, l in zip(names, labels.initial().labels) if l == k]
        out[k] = max(set(types), key=types.count)
    return out


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_apply_edits_in_order() -> None:
    state = LabelState(np.array([0, 0, 1, 1, 2, 2, 3]), {})
    index = {f"i{j}": j for j in range(7)}
    new = apply_edits(state, Edits.from_mapping({"names": {0: "a", 3: "a"}, "merge": {2: 1}, "move": {"i0": 9}}), index)
    assert new.labels.tolist() == [9, 0, 1, 1, 1, 1, 0]  # 3 named like 0 → merged into 0; 2 → 1; i0 → a new cluster
    assert new.names == {0: "a"}
    vectors = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.1], [0.0]])
    split = apply_edits(new, Edits.from_mapping({"split": {"cluster": 1, "into": 2}}), index, vectors)
    assert sorted(set(split.labels.tolist())) == [0, 1, 9, 10]
    assert split.labels[2] == split.labels[3] != split.labels[4] == split.labels[5]
    with pytest.raises(EditError, match="no cluster 7"):
        apply_edits(state, Edits.from_mapping({"merge": {7: 0}}), index)
    with pytest.raises(EditError, match="unknown key"):
        Edits.from_mapping({"rename": {}})


def test_relabel_names_merge_move_split_and_undo(run: Path, tmp_path: Path) -> None:
    majority = _majority(run)
    first = _write(tmp_path / "e1.yaml", {"names": {k: t for k, t in majority.items()}})
    assert main(["relabel", "--run", str(run), "--edits", str(first)]) == 0
    table = _table(run)
    assert {name for _, name in table.values()} == set(majority.values())
    image = next(n for n, (k, _) in table.items() if majority[k] != "hole")
    second = _write(tmp_path / "e2.yaml", {"move": {image: "hole"}, "merge": [["good", "stain"]]})
    assert main(["relabel", "--run", str(run), "--edits", str(second)]) == 0
    table2 = _table(run)
    assert table2[image][1] == "hole"
    assert "good" not in {name for _, name in table2.values()}  # merged into stain, whose name it keeps
    third = _write(tmp_path / "e3.yaml", {"split": {"cluster": "hole", "into": 2}})
    assert main(["relabel", "--run", str(run), "--edits", str(third)]) == 0
    assert len({k for k, _ in _table(run).values()}) == len({k for k, _ in table2.values()}) + 1
    assert [p.name for p in RunLabels(run).history()] == ["001.yaml", "002.yaml", "003.yaml"]
    assert main(["relabel", "--run", str(run), "--undo"]) == 0
    assert _table(run) == table2
    assert main(["relabel", "--run", str(run), "--undo"]) == 0
    assert _table(run) == table
    bad = _write(tmp_path / "bad.yaml", {"move": {"no/such.png": 0}})
    assert main(["relabel", "--run", str(run), "--edits", str(bad)]) == 2  # refused before anything is written
    assert len(RunLabels(run).history()) == 1 and _table(run) == table


def test_refit_reclusters_the_unnamed_and_undoes(run: Path, tmp_path: Path) -> None:
    majority = _majority(run)
    named = {k: t for k, t in majority.items() if t != "stain"}
    assert main(["relabel", "--run", str(run), "--edits", str(_write(tmp_path / "e.yaml", {"names": named}))]) == 0
    before = _table(run)
    assert main(["refit", "--run", str(run)]) == 0
    after = _table(run)
    assert {n for n, (k, name) in before.items() if name} == {n for n, (k, name) in after.items() if name}  # named members kept
    assert len(RunLabels(run).history()) == 2 and yaml.safe_load(RunLabels(run).history()[-1].read_text())["note"].startswith("refit")
    assert main(["relabel", "--run", str(run), "--undo"]) == 0
    assert _table(run) == before
    assert main(["refit", "--run", str(run), "--base", "reviewed"]) == 0  # no image moved by hand: named clusters count whole


def test_refit_needs_a_name(run: Path) -> None:
    assert main(["refit", "--run", str(run)]) == 2


def test_exports_load_back(run: Path, tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    majority = _majority(run)
    assert main(["relabel", "--run", str(run), "--edits", str(_write(tmp_path / "e.yaml", {"names": majority}))]) == 0
    table = _table(run)
    for fmt in ("folders", "mvtec", "coco"):
        assert main(["export", "--run", str(run), "--format", fmt, str(tmp_path / fmt)]) == 0
    folders = {p.name: len(list(p.iterdir())) for p in (tmp_path / "folders").iterdir()}
    assert folders == {t: sum(1 for _, name in table.values() if name == t) for t in set(majority.values())}
    defect_types = [t for t in set(majority.values()) if t != "good"]
    for t in defect_types:
        tests = sorted(p.stem for p in (tmp_path / "mvtec" / "test" / t).iterdir())
        masks = sorted(p.stem[: -len("_mask")] for p in (tmp_path / "mvtec" / "ground_truth" / t).iterdir())
        assert tests == masks
    assert not (tmp_path / "mvtec" / "ground_truth" / "good").exists()
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    cats = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == set(defect_types)
    assert len(coco.getImgIds()) == len(table)
    assert coco.getAnnIds()
    for ann in coco.loadAnns(coco.getAnnIds()):  # every instance decodes, lies inside its image's exported mask
        img = coco.loadImgs(ann["image_id"])[0]
        m = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert m.shape == (img["height"], img["width"]) and m.sum() == ann["area"] > 0
        name = coco.loadCats(ann["category_id"])[0]["name"]
        stem = Path(img["file_name"]).stem
        gt = np.asarray(Image.open(tmp_path / "mvtec" / "ground_truth" / name / f"{stem}_mask.png")) > 0
        assert not (m & ~gt).any()
        assert (tmp_path / "coco" / img["file_name"]).is_file()
    assert main(["export", "--run", str(run), "--format", "voc", str(tmp_path / "x")]) == 2


def test_open_set_flags_a_held_back_type(example: Path, tmp_path: Path) -> None:
    run = tmp_path / "known"
    assert main(["fit", "--data", str(example / "ex" / "test"), "--exclude", "stain/*", *FIT, "--n_clusters", "3", "--run", str(run)]) == 0
    assert main(["example", str(tmp_path / "new"), "--per_kind", "6", "--n_good", "6", "--size", "96", "--seed", "1"]) == 0
    assert main(["predict", "--run", str(run), "--data", str(tmp_path / "new" / "test"), "--save_pngs", "false", "--quiet", "true"]) == 0
    rows = list(csv.DictReader(open(run / "predictions" / "predictions.csv")))
    held = [r["name"] == "unknown" for r in rows if r["image"].startswith("stain/")]
    known = [r["name"] == "unknown" for r in rows if not r["image"].startswith("stain/")]
    assert np.mean(held) >= 0.5 and np.mean(known) < np.mean(held)
    assert all(r["cluster"] == "-1" for r in rows if r["name"] == "unknown")
    assert main(["predict", "--run", str(run), "--data", str(tmp_path / "new" / "test"), "--save_pngs", "false", "--quiet", "true", "--reject", "off"]) == 0
    rows = list(csv.DictReader(open(run / "predictions" / "predictions.csv")))
    assert not any(r["name"] == "unknown" for r in rows)
    assert main(["predict", "--run", str(run), "--data", str(tmp_path / "new" / "test"), "--reject", "2"]) == 2


def test_predict_on_fitted_images_returns_their_labels(run: Path, tmp_path: Path) -> None:
    majority = _majority(run)
    names = {k: ("good" if t == "good" else t) for k, t in majority.items()}
    assert main(["relabel", "--run", str(run), "--edits", str(_write(tmp_path / "e.yaml", {"names": names}))]) == 0
    table = _table(run)
    data = RunLabels(run).run.images().root
    assert main(["predict", "--run", str(run), "--data", data, "--save_pngs", "false", "--quiet", "true", "--output", str(tmp_path / "p")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert {r["image"]: (int(r["cluster"]), r["name"]) for r in rows} == table
    assert all(r["fitted"] == "1" for r in rows)


DRIVER = """<script>
window.addEventListener('load', () => {
  const field = document.querySelector('input.cluster-name[data-cluster="CLUSTER"]');
  field.value = 'NAME';
  const move = document.querySelector('select.move-to[data-image="IMAGE"]');
  move.value = 'new';
  document.getElementById('download-edits').click();
  document.body.setAttribute('data-preview', document.getElementById('edits-preview').textContent.replace(/\\s+/g, ' '));
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_edit_controls_in_headless_browser(run: Path, tmp_path: Path) -> None:
    assert main(["report", "--run", str(run)]) == 0
    page = run / "report" / "index.html"
    html = page.read_text()
    k = 2
    assert html.count("class='cluster-name'") == len(RunLabels(run).initial().clusters)
    assert html.count("class='move-to'") == len(RunLabels(run).image_names())
    image = next(n for n, l in zip(RunLabels(run).image_names(), RunLabels(run).initial().labels) if l == k)
    probe = page.parent / "_edit_probe.html"
    probe.write_text(html.replace("</body>", DRIVER.replace("CLUSTER", str(k)).replace("NAME", "pit marks").replace("IMAGE", image)))
    home = tmp_path / "home"
    home.mkdir()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout
    assert "pit marks" in dom, "the page's driver script never ran"
    downloaded = home / "Downloads" / "edits.json"
    assert downloaded.is_file(), "the download button wrote no file"
    edits = json.loads(downloaded.read_text())
    assert edits == {"names": {str(k): "pit marks"}, "move": {image: max(RunLabels(run).initial().clusters) + 1}}
    assert main(["relabel", "--run", str(run), "--edits", str(downloaded)]) == 0
    table = _table(run)
    assert {name for _, name in table.values()} == {"", "pit marks"}
    assert table[image] == (max(RunLabels(run).initial().clusters) + 1, "")
    assert main(["report", "--run", str(run)]) == 0  # the page now shows the edited clusters
    assert "value='pit marks'" in page.read_text()


def test_open_set_assigner_on_blobs() -> None:
    from anomaly_clustering.openset import OpenSetAssigner

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 8)), rng.normal(20, 1, (40, 8))])
    state = LabelState(np.repeat([0, 1], 40), {1: "good"})
    with pytest.raises(RuntimeError, match="not fitted"):
        OpenSetAssigner().predict(x)
    assigner = OpenSetAssigner(0.99).fit(x, state)
    new = np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(20, 1, (20, 8)), rng.normal(-30, 1, (5, 8))])
    result = assigner.predict(new)
    assert result.names[-5:] == ("unknown",) * 5 and (result.clusters[-5:] == -1).all()
    assert np.mean(result.unknown[:40]) <= 0.1
    assert set(result.names[20:40]) <= {"good", "unknown"} and set(result.names[:20]) <= {"cluster-0", "unknown"}
    assert not OpenSetAssigner(None).fit(x, state).predict(new).unknown.any()


def test_seeded_kmeans_keeps_labelled_rows() -> None:
    from anomaly_clustering.refit import seeded_kmeans

    x = np.array([[0.0], [0.2], [0.4], [10.0], [10.2], [5.3]])
    classes = np.array([0, -1, -1, 1, -1, 0])  # the reviewer put the ambiguous 5.3 into class 0
    out = seeded_kmeans(x, classes, init=np.array([0, 1, 1, 1, 1, 1]))
    assert out.tolist() == [0, 0, 0, 1, 1, 0]
