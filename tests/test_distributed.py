"""Several processes through Lightning: a two-process DDP ``fit`` on the CPU (gloo) against the one-process run, and
the pieces it rests on (shared feature shards, launch settings)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from anomaly_clustering.distributed import DistributedConfig, DistributedConfigError, launch
from anomaly_clustering.store import ShardedArrayWriter


def _fit(data: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a 2-core machine: one thread each
    cmd = [
        sys.executable, "-m", "anomaly_clustering.cli", "fit", "--data", str(data), "--run", str(run),
        "--localizer", "fca-vae", "--localizer.vae_iterations", "30", "--classifier", "blind-lca",
        "--representation.epochs", "2", "--input_size", "96", "--n_clusters", "4", "--quiet", "true", *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _labels(run: Path) -> list[str]:
    with open(run / "clusters.csv") as f:
        return [row["cluster"] for row in csv.DictReader(f)]


def _features(run: Path) -> np.ndarray:
    (path,) = (run / "cache" / "features").glob("*/data.npy")
    return np.load(path).astype(np.float32)


def test_two_process_ddp_fit_matches_one_process(tmp_path):
    """Features, the VAE and the contrastive head go through DDP over gloo with two CPU processes: the features equal
    the one-process features and the clustering agrees with the one-process clustering."""
    from anomaly_clustering.examples import make_example_set

    make_example_set(tmp_path / "set", per_kind=4, n_good=4, size=96, seed=3)
    data = tmp_path / "set" / "test"
    one = _fit(data, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _fit(data, tmp_path / "two", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp")
    assert two.returncode == 0, two.stderr[-2000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2
    assert np.abs(_features(tmp_path / "one") - _features(tmp_path / "two")).max() < 1e-2
    ari = adjusted_rand_score(_labels(tmp_path / "one"), _labels(tmp_path / "two"))
    assert ari > 0.6, f"two-process labels disagree with the one-process run (ARI {ari:.2f})"
    # rank 1 never writes the run folder or prints the result line
    assert two.stdout.count("images → 4 clusters") == 1


def test_shards_written_by_two_processes_are_merged(tmp_path):
    shape = (10, 3)
    main = ShardedArrayWriter(tmp_path, shape, np.float32, shard_size=4)  # rank 0 creates the file
    other = ShardedArrayWriter(tmp_path, shape, np.float32, shard_size=4, create=False, rank=1)
    main.write(0, np.ones((4, 3)))
    other.write(1, np.full((4, 3), 2.0))
    main.close(), other.close()
    assert (tmp_path / "progress.1.json").exists()
    reopened = ShardedArrayWriter(tmp_path, shape, np.float32, shard_size=4)
    assert reopened.pending() == [2]  # both processes' shards count as done
    np.testing.assert_array_equal(reopened.array[4:8], 2.0)


def test_one_process_settings_launch_nothing():
    assert launch(DistributedConfig()) is None
    assert not DistributedConfig(devices="1").is_multi_process
    assert DistributedConfig(devices=2).is_multi_process
    assert DistributedConfig(num_nodes=2).is_multi_process


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_gpu_accelerator_without_cuda_is_a_clear_error():
    with pytest.raises(DistributedConfigError, match="--accelerator gpu"):
        launch(DistributedConfig(accelerator="gpu", devices=2, strategy="ddp"))
