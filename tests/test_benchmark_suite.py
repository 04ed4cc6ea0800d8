"""The benchmark suite: seeds, suite files resolved against the data root, gap closed, summary over seeds, and one
end-to-end run on tiny generated data (child processes hand their rows back through a JSON file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly_clustering import cli
from anomaly_clustering.benchmarking import (
    DATA_ENV,
    format_summary,
    gap_closed,
    leave_one_set_out,
    load_suite,
    parse_seeds,
    resolve_data_root,
    summarize,
)
from anomaly_clustering.cli import CLIError


def test_parse_seeds_and_gap_closed() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 3, 3 ,4") == [3, 4]
    with pytest.raises(ValueError):
        parse_seeds("a,b")
    assert gap_closed(0.6, 0.2) == pytest.approx(0.5)
    assert gap_closed(0.1, 0.2) == pytest.approx(-0.125)
    assert gap_closed(1.0, 0.3) == pytest.approx(1.0)


def _suite(tmp_path: Path, sets: dict) -> Path:
    import yaml

    f = tmp_path / "suite.yaml"
    f.write_text(yaml.safe_dump({"sets": sets}))
    return f


def test_suite_paths_are_relative_to_the_data_root(tmp_path, monkeypatch) -> None:
    (tmp_path / "data" / "a" / "test").mkdir(parents=True)
    suite = _suite(tmp_path, {"a": {"data": "a/test", "n_clusters": 3, "subset": 10}})
    sets = load_suite(str(suite), str(tmp_path / "data"))
    assert sets[0].name == "a" and Path(sets[0].data) == tmp_path / "data" / "a" / "test" and sets[0].subset == 10
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    assert resolve_data_root() == tmp_path / "data"
    assert load_suite(str(suite))[0].n_clusters == 3
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_root().parts[-2:] == ("shared", "data")  # ../shared/data beside the repository
    for bad in ({"a": {"data": "a/test", "colour": 1}}, {"a": {"data": str(tmp_path / "data" / "a" / "test")}}, {"a": {"data": "missing"}}, {"a": {}}):
        with pytest.raises(CLIError):
            load_suite(str(_suite(tmp_path, bad)), str(tmp_path / "data"))
    with pytest.raises(CLIError):
        load_suite(str(tmp_path / "nope.yaml"), str(tmp_path / "data"))
    two = _suite(tmp_path, {"a": {"data": "a/test"}, "b": {"data": "b/test"}})  # b's folder is missing
    assert [x.name for x in load_suite(str(two), str(tmp_path / "data"), only=["a"])] == ["a"]
    with pytest.raises(CLIError):
        load_suite(str(two), str(tmp_path / "data"))
    with pytest.raises(CLIError):
        load_suite(str(two), str(tmp_path / "data"), only=["c"])


def _row(data: str, clf: str, seed: int, nmi: float, k_mode: str = "given", k: int = 4) -> dict:
    return {"data": data, "protocol": "with_good", "localizer": "loc", "classifier": clf, "seed": seed, "k_mode": k_mode, "K": k,
            "n_images": 20, "nmi": nmi, "ari": nmi / 2, "f1_micro": nmi, "wall_seconds": 1.0}


def test_summary_means_spread_gap_and_worst_set() -> None:
    rows = [_row("s1", "average", s, 0.5) for s in (0, 1)] + [_row("s1", "ours", 0, 0.6), _row("s1", "ours", 1, 0.8)]
    rows += [_row("s2", "average", s, 0.2) for s in (0, 1)] + [_row("s2", "ours", s, 0.1) for s in (0, 1)]
    rows += [_row("s1", "ours", 0, 0.7, "auto", 5), _row("s1", "ours", 1, 0.7, "auto", 3)]
    summary = {(e["data"], e["classifier"]): e for e in summarize(rows)}
    s1 = summary[("s1", "ours")]
    assert s1["nmi"] == pytest.approx((0.7, 0.1))
    assert s1["g"][0] == pytest.approx(((0.6 - 0.5) / 0.5 + (0.8 - 0.5) / 0.5) / 2)
    assert s1["g_min"] == pytest.approx(0.2)
    assert s1["auto"]["K"] == [5, 3] and s1["auto"]["nmi"][0] == pytest.approx(0.7)
    assert summary[("s2", "ours")]["g"][0] == pytest.approx(-0.125)
    assert summary[("s1", "average")]["g"][0] == pytest.approx(0.0)
    text = format_summary(summarize(rows))
    assert "worst set s2 g = -0.125" in text and "mean g = 0.13" in text  # (0.4 - 0.125) / 2
    assert "sets with a seed below the floor: 1" in text
    assert "K auto within ±1 of the truth on 1/1" in text


def test_leave_one_set_out_picks_on_the_other_sets_and_checks_the_held_out_one() -> None:
    # "steady" is modestly above the floor everywhere; "spiky" is far above on s1 and s2 but below it on s3.
    nmis = {"steady": {"s1": (0.6, 0.6), "s2": (0.6, 0.6), "s3": (0.6, 0.6)}, "spiky": {"s1": (0.9, 0.9), "s2": (0.9, 0.9), "s3": (0.4, 0.45)}}
    rows = [_row(d, "average", seed, 0.5) for d in ("s1", "s2", "s3") for seed in (0, 1)]
    rows += [_row(d, clf, seed, v[seed]) for clf, per in nmis.items() for d, v in per.items() for seed in (0, 1)]
    folds = {f["held_out"]: f for f in leave_one_set_out(summarize(rows))}
    assert folds["s3"]["pick"] == ("loc", "spiky")  # chosen on s1 + s2 only, where it wins …
    assert folds["s3"]["g_min"] == pytest.approx(-0.2) and folds["s3"]["g"] == pytest.approx(-0.15)  # … and fails the unseen set
    assert folds["s1"]["pick"] == ("loc", "steady") and folds["s1"]["g"] == pytest.approx(0.2)
    text = format_summary(summarize(rows))
    assert "without s3: loc × spiky" in text and "below the floor on a seed" in text
    assert leave_one_set_out(summarize([r for r in rows if r["data"] != "s3"])) == []  # two sets: no fold


def test_benchmark_suite_with_seeds_end_to_end(example_root, tmp_path, capsys) -> None:
    suite = _suite(tmp_path, {"example": {"data": "test", "n_clusters": 4}})
    out = tmp_path / "bench"
    argv = ["benchmark", "--suite", str(suite), "--data_root", str(example_root), "--seeds", "0,1", "--localizers", "color-stats",
            "--classifiers", "weighted", "--fit_options", "--input_size 64 --k_max 5", "--out", str(out), "--cache_dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())
    assert sorted((r["classifier"], r["seed"], r["k_mode"]) for r in rows) == sorted(
        [("average", s, "given") for s in (0, 1)] + [("weighted", s, m) for s in (0, 1) for m in ("given", "auto")])
    auto = [r for r in rows if r["k_mode"] == "auto"]
    assert all(2 <= r["K"] <= 5 and r["k_curve"] for r in auto)
    assert all(0.0 <= r["stability"] <= 1.0 for r in rows)  # every run carries its clusters' stability
    summary = json.loads((out / "summary.json").read_text())
    ours = next(e for e in summary if e["classifier"] == "weighted")
    assert ours["seeds"] == [0, 1] and ours["g"] is not None and ours["auto"]["K"]
    text = (out / "results.md").read_text()
    assert "## Summary over seeds" in text and "worst set example" in text
    assert not list(out.glob("benchmark-*.json"))  # the children's result files are cleaned up
    # a rerun resumes: every run is found in results.jsonl
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("done earlier") == 4
    # --sets must name sets of the suite
    assert cli.main([*argv[:3], "--sets", "nope", *argv[3:]]) == 2
