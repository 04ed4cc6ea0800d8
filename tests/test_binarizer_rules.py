"""``benchmarks/binarizer_rules.py`` and ``benchmarks/registered_neighbours.py``: re-binarizing a run's saved maps with
the run's own binarizer gives back the run's masks and scores; a planted flip in shifted copies of one two-level
layout is found by registration, pixel for pixel, and its copies stay empty."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from binarizer_rules import parse_rule, score_rules  # noqa: E402
from registered_neighbours import anomaly_masks  # noqa: E402
from run_masks import run_mask_scores  # noqa: E402


def test_the_runs_own_binarizer_gives_back_its_masks(fitted_run, example_data) -> None:
    own = run_mask_scores(fitted_run, example_data)  # the fixture's run: color-stats maps, the default's hysteresis
    rows = score_rules(fitted_run, example_data, ["own", "otsu", 'hysteresis:{"peak_fraction": 0.8}'])
    assert rows["own"]["same_regions"] and {k: rows["own"][k] for k in own} == own
    assert rows["otsu"]["flagged_anomalous"] == 100.0 and rows["otsu"]["empty_good"] < own["empty_good"]
    tighter = rows['hysteresis:{"peak_fraction": 0.8}']  # the same gate: the same verdicts, smaller regions
    assert tighter["same_regions"] and tighter["empty_good"] == own["empty_good"] and tighter["iou"] != own["iou"]
    assert parse_rule('hysteresis:{"peak_fraction": 0.8}') == ("hysteresis", {"peak_fraction": 0.8})
    assert parse_rule("own", fitted_run)[0] == "hysteresis" and parse_rule("otsu") == ("otsu", {})


def test_registration_finds_a_planted_flip_in_shifted_copies() -> None:
    rng = np.random.default_rng(0)
    layout = np.kron(rng.random((24, 24)) > 0.5, np.ones((4, 4), bool))  # 96 px of 4-px blocks: every shift is unique
    boards = np.stack([np.roll(layout, (dy, dx), (0, 1))[16:80, 16:80] for dy, dx in [(0, 0), (3, -5), (-6, 2), (7, 7)]])
    boards[0, 30:34, 30:34] = ~boards[0, 30:34, 30:34]  # a 4×4 defect on the first board
    masks = anomaly_masks(boards, [1, 2], screen=32, candidates=3, max_shift=0.2)
    for k in (1, 2):
        assert masks[k][0, 30:34, 30:34].all() and masks[k][0].sum() == 16, "the flip, and only it"
        assert not masks[k][1:].any(), "its defect-free copies register exactly and stay empty"
