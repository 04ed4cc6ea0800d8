"""The clusters' stability (``anomaly_clustering.stability``): refits on random subsets agree with a partition the
data holds and not with one it does not; per-image info follows the subsets; bad settings are refused; every fit
reports it, the cache keeps it, ``--stability_resamples 0`` turns it off, and the report shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anomaly_clustering import cli, cluster_stability, registry
from anomaly_clustering.kselect import take_embeddings
from anomaly_clustering.records import Embeddings
from anomaly_clustering.stability import _best_jaccard, stability_reading
from conftest import FAST_FIT


def _fitted(x: np.ndarray, k: int, info: dict | None = None, name: str = "ward", **options):
    emb = Embeddings.per_image(x, info)
    clu = registry.create("clusterer", name, n_clusters=k, **options)
    return clu, emb, clu.fit_predict(emb)


def test_separated_blobs_are_stable_and_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 20
    blobs = np.concatenate([c + rng.normal(size=(30, 8)) for c in centres]).astype(np.float32)
    noise = rng.normal(size=(120, 8)).astype(np.float32)
    on_blobs = cluster_stability(*_fitted(blobs, 4), n_resamples=6)
    on_noise = cluster_stability(*_fitted(noise, 4), n_resamples=6)
    assert on_blobs.score > 0.99 and np.all(on_blobs.cluster_scores > 0.99)
    assert on_noise.score < on_blobs.score - 0.2 and np.nanmin(on_noise.cluster_scores) < 0.9
    assert on_blobs.n_resamples == 6 and on_blobs.cluster_scores.shape == (4,)


def test_seeded_and_the_clusterer_is_left_as_fitted() -> None:
    x = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    clu, emb, clustering = _fitted(x, 3)
    before = clu.predict(emb).labels.copy()
    a = cluster_stability(clu, emb, clustering, n_resamples=4, seed=3)
    b = cluster_stability(clu, emb, clustering, n_resamples=4, seed=3)
    assert a.score == b.score and np.array_equal(a.cluster_scores, b.cluster_scores)
    assert np.array_equal(clu.predict(emb).labels, before)  # refits work on clones


def test_per_image_info_follows_the_subsets() -> None:
    """The default's clusterer reads per-image info (has_region, image_scores): each subset must carry its own rows."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(40, 6)) + 8, rng.normal(size=(40, 6)) - 8, rng.normal(size=(40, 6))]).astype(np.float32)
    has_region = [True] * 80 + [False] * 40
    info = {"has_region": has_region, "image_scores": [1.0] * 80 + [0.0] * 40}
    stab = cluster_stability(*_fitted(x, 3, info, "normal-first", normal_by="region"), n_resamples=4)
    assert stab.score > 0.9
    sub = take_embeddings(Embeddings.per_image(x, info), np.array([0, 85, 119]))
    assert sub.info["has_region"] == [True, False, False] and sub.n_images == 3


def test_best_jaccard_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    refit = np.array([5, 5, 7, 7, 7, 7])  # cluster 0 → {5}: 2/3; 1 → {7}: 2/4; 2 → {7}: 1/4
    assert np.allclose(_best_jaccard(labels, refit, 4)[:3], [2 / 3, 0.5, 0.25]) and np.isnan(_best_jaccard(labels, refit, 4)[3])
    assert [stability_reading(v) for v in (0.5, 0.7, 0.8, 0.9, float("nan"))] == ["dissolved", "doubtful", "stable", "highly stable", "not measured"]


@pytest.mark.parametrize("bad", [{"n_resamples": 0}, {"n_resamples": 2.5}, {"n_resamples": True}, {"fraction": 1.0}, {"fraction": 0.0}])
def test_bad_settings_are_refused(bad) -> None:
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError):
        cluster_stability(*_fitted(x, 2), **bad)


def test_too_few_images_give_nan_not_a_crash() -> None:
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    stab = cluster_stability(*_fitted(x, 3), n_resamples=3)
    assert np.isnan(stab.score) and stab.n_resamples == 0 and "too few" in stab.info["skipped"]
    assert stab.to_dict()["score"] is None  # valid JSON, no NaN


def _fit(tmp_path: Path, data: Path, run: str, *extra: str) -> dict:
    assert cli.main(["fit", "--data", str(data), *FAST_FIT, "--run", str(tmp_path / run), *extra]) == 0
    return json.loads((tmp_path / run / "summary.json").read_text())


def test_every_fit_reports_it_the_cache_keeps_it_and_zero_turns_it_off(tmp_path, example_data) -> None:
    first = _fit(tmp_path, example_data, "a", "--stability_resamples", "5")
    stab = first["stability"]
    assert stab["n_resamples"] == 5 and 0.0 <= stab["score"] <= 1.0 and len(stab["cluster_scores"]) == first["n_clusters"]
    assert stab["reused_from_cache"] is False
    again = _fit(tmp_path, example_data, "b", "--stability_resamples", "5")["stability"]
    assert again["reused_from_cache"] is True and again["score"] == stab["score"]
    assert _fit(tmp_path, example_data, "c", "--stability_resamples", "0")["stability"] is None


def test_a_failing_refit_does_not_lose_the_run(tmp_path, example_data, monkeypatch) -> None:
    from anomaly_clustering import pipeline

    def broken(*_args, **_kwargs):
        raise RuntimeError("refit exploded")

    monkeypatch.setattr(pipeline, "cluster_stability", broken)
    summary = _fit(tmp_path, example_data, "r", "--stability_resamples", "3")
    assert summary["stability"]["score"] is None and "refit exploded" in summary["stability"]["skipped"]
    assert (tmp_path / "r" / "clusters.csv").exists() and any("not measured" in line for line in summary["log"])


def test_a_negative_count_is_refused_before_any_work(tmp_path, example_data, capsys) -> None:
    assert cli.main(["fit", "--data", str(example_data), *FAST_FIT, "--run", str(tmp_path / "r"), "--stability_resamples", "-1"]) != 0
    assert "stability_resamples" in capsys.readouterr().err and not (tmp_path / "r" / "summary.json").exists()


def test_the_report_shows_it(fitted_run: Path, tmp_path: Path) -> None:
    import shutil

    from anomaly_clustering.report import write_report

    run = shutil.copytree(fitted_run, tmp_path / "run")  # the shared run stays read-only
    summary = json.loads((run / "summary.json").read_text())
    page = write_report(str(run)).read_text()
    assert "id='stability'" in page and f"NMI {summary['stability']['score']:.3f}" in page
    first = summary["stability"]["cluster_scores"][0]
    assert f"stability {first:.2f} ({stability_reading(first)})" in page
