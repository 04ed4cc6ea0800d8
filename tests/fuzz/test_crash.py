"""Crash safety: ``fit`` killed with SIGKILL at several points of a small generated run (feature extraction, the
localizer's VAE training, the representation, the write-out of the run folder); every rerun resumes from the cached
stages, a killed run folder is never taken for a finished one, and the last rerun ends with the labels of an
uninterrupted run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from badfolders import good_images

FIT = ["--localizer", "fca-vae", "--localizer.vae_iterations", "15", "--localizer.vae_batch_pixels", "128", "--localizer.latent", "16",
       "--input_size", "64", "--n_clusters", "3", "--quiet", "true"]
OUTPUTS = ("clusters.csv", "maps", "masks", "records", "model", "config.yaml")


def labels(run: Path) -> dict[str, int]:
    with open(run / "clusters.csv", newline="") as f:
        return {r["image"]: int(r["cluster"]) for r in csv.DictReader(f)}


def fit_command(data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "anomaly_clustering.cli", "fit", "--data", str(data), "--run", str(run), *FIT]


def run_until(cmd: list[str], trigger: Callable[[], bool], limit_s: float = 300) -> tuple[bool, int]:
    """Start ``cmd``; SIGKILL it as soon as ``trigger()`` holds. (killed, exit code)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if trigger():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True, proc.returncode
            if time.monotonic() - t0 > limit_s:
                raise AssertionError(f"fit still running after {limit_s} s")
            time.sleep(0.002)
        err = proc.stderr.read().decode(errors="replace")
        assert proc.returncode == 0, err
        return False, 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def assert_never_taken_for_finished(run: Path) -> None:
    """A killed run folder is either finished (summary.json and every output) or visibly unfinished (no summary)."""
    if (run / "summary.json").exists():
        assert all((run / name).exists() for name in OUTPUTS), sorted(os.listdir(run))


def test_fit_killed_at_four_points_resumes_to_the_uninterrupted_labels(tmp_path):
    data = tmp_path / "data"
    good_images(data, 8, size=48, seed=21)
    ref = tmp_path / "ref"
    assert run_until(fit_command(data, ref), lambda: False) == (False, 0)
    want = labels(ref)

    run = tmp_path / "run"
    cache = run / "cache"
    entry = lambda stage: any((cache / stage).glob("*/_COMPLETE"))  # noqa: E731
    points = {
        "features": lambda: any((cache / "features").glob("*.partial")),
        "localizer VAE": lambda: entry("features"),
        "representation": lambda: entry("binarizer"),
        "write-out": lambda: any(run.glob(".staging-*")),
    }
    killed = []
    for name, trigger in points.items():
        was_killed, _ = run_until(fit_command(data, run), trigger)
        if was_killed:
            killed.append(name)
        assert_never_taken_for_finished(run)
    print(f"fit killed at {len(killed)} of {len(points)} points: {', '.join(killed)}")
    assert len(killed) >= 3, f"only killed at {killed}"
    assert run_until(fit_command(data, run), lambda: False) == (False, 0)
    assert labels(run) == want, killed
