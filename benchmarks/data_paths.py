"""Where the benchmark scripts find the labelled sets: ``--data``, else ``$ANOMALY_CLUSTERING_DATA``, else
``../shared/data`` beside the repository (MVTec AD layout: ``<set>/test/<type>/*.png``)."""

from __future__ import annotations

import os
from pathlib import Path

#: Benchmarks never download: weights come from installed packages or local files (a missing file is an error).
os.environ.setdefault("ANOMALY_CLUSTERING_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The folder that holds the sets (``mtd/``, ``neu_det/``, ``mvtec_bottle/``, …)."""
    return Path(os.environ.get("ANOMALY_CLUSTERING_DATA") or REPO.parent / "shared" / "data")


def default_set(name: str = "mtd") -> str:
    """The test folder of one set, the default of a script's ``--data``."""
    return str(data_root() / name / "test")
