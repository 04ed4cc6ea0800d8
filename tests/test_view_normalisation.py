"""``benchmarks/view_normalisation.py``: its transforms of the saved (standardised) views are exactly what
``multiview``'s ``view_transform`` computes from the raw views in a run, so its rows stand for the default's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from view_normalisation import transformed, transformed_views  # noqa: E402


@pytest.mark.parametrize("how", ["l2", "ssqrt", "ssqrt-l2"])
def test_saved_view_transforms_equal_the_runs(how: str) -> None:
    from anomaly_clustering.plugins.multiview.representation import apply_view_transform, fit_view_transform

    raw = np.random.default_rng(0).gamma(0.5, 3.0, size=(40, 12)) + 5.0  # skewed, off-centre, like pooled activations
    saved = apply_view_transform(raw, fit_view_transform(raw, "none"))  # what classifier_ablation.py saves
    run = apply_view_transform(raw, fit_view_transform(raw, how))
    assert np.allclose(transformed(saved, how), run, atol=1e-5)
    assert not np.allclose(transformed(saved, how), saved, atol=1e-3)


def test_crop_as_saved_leaves_only_the_crop_alone() -> None:
    rng = np.random.default_rng(1)
    blocks = {name: rng.normal(size=(20, 6)).astype(np.float32) for name in ("eq2", "avg512", "ctx384", "crop224")}
    out = transformed_views(blocks, "l2, crop as saved")
    assert out["crop224"] is blocks["crop224"]
    assert all(not np.allclose(out[n], blocks[n]) for n in ("eq2", "avg512", "ctx384"))
