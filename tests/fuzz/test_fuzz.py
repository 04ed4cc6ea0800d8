"""Fuzz / fault suite: generated bad folders through fit, predict, evaluate and report (in-process, tiny images).

Every command of every case must end in exit 0 (a warning naming what was skipped, where something was) or exit 2
with exactly one error line: never a traceback (an exception escaping ``main``), never a hang (a per-command time
limit), never a half-written run folder (after ``fit`` the run holds every output or none).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest

from anomaly_clustering import cli
from badfolders import FUZZ_CASES, CaseTimeout, run_state, time_limit

PROGRESS = re.compile(r"\d+%\|")  # a tqdm progress line (report has no --quiet)
LIMIT_S = 120  # per command; a normal case takes a few seconds
#: Expected exit code of fit per case (0: runs, maybe with a warning; 2: refused with one line).
EXPECTED_FIT = {
    "all_identical": 2, "one_image": 2, "two_images": 2, "two_distinct_many_copies": 2,
    "empty_folder": 2, "no_images": 2, "only_unreadable": 2,
}
#: Cases whose fit must warn (something in the folder was skipped or merged).
MUST_WARN = {"tiny_and_thin", "truncated_and_garbage", "symlink_loops", "fifo_and_folder_named_png", "duplicates", "decompression_bomb", "only_unreadable"}


@pytest.fixture(scope="module")
def fuzz_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_cache")


def call(capsys, command: str, *args: str) -> tuple[int, list[str], list[str]]:
    """Run one command in-process under the time limit: (exit code, warning lines, other stderr lines)."""
    try:
        with time_limit(LIMIT_S):
            code = cli.main([command, *map(str, args)])
    except CaseTimeout as exc:
        pytest.fail(f"{command} {' '.join(map(str, args))}: {exc}")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not PROGRESS.search(line)]
    warnings = [line for line in err if line.startswith("warning:")]
    other = [line for line in err if not line.startswith("warning:")]
    assert not any("Traceback" in line for line in err), "\n".join(err)
    if code == 0:
        assert not other, "\n".join(other)
    else:
        assert code == 2, f"exit {code}: " + "\n".join(err)
        assert len(other) == 1 and other[0].startswith(f"anomaly-cluster {command}: error: "), "\n".join(err)
    return code, warnings, other


@pytest.mark.parametrize("case", sorted(FUZZ_CASES))
def test_bad_folder_through_every_command(case, tmp_path, capsys, fuzz_cache):
    data, run = tmp_path / "data", tmp_path / "run"
    FUZZ_CASES[case](data)
    fit_args = ["--data", data, "--run", run, "--localizer", "color-stats", "--classifier", "average", "--input_size", "32",
                "--n_clusters", "auto", "--k_max", "4", "--quiet", "true", "--cache_dir", fuzz_cache]
    code, warned, _ = call(capsys, "fit", *fit_args)
    assert code == EXPECTED_FIT.get(case, 0), f"{case}: fit exit {code}"
    if case in MUST_WARN:
        assert warned, f"{case}: fit skipped or merged something without a warning"
    assert run_state(run) == ("whole" if code == 0 else "none"), sorted(os.listdir(run)) if run.exists() else "-"
    if code:
        return
    with open(run / "clusters.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len({r["map_file"] for r in rows}) == len(rows) and all((run / r["mask_file"]).is_file() for r in rows)
    # the same folder through predict, evaluate (flat folders have no labels: one line) and report
    code, _, _ = call(capsys, "predict", "--run", run, "--data", data, "--output", tmp_path / "pred", "--quiet", "true")
    assert code == 0
    code, _, other = call(capsys, "evaluate", "--run", run)
    assert code == 0 or "no ground-truth labels" in other[0]
    code, _, _ = call(capsys, "report", "--run", run)
    assert code == 0 and (run / "report" / "index.html").is_file()
