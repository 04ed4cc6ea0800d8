"""Scoring a run against ground truth: clustering (NMI / ARI / F1) and localization (PRO@0.3, AUROC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .data import GOOD_NAMES, load_ground_truth
from .metrics import clustering_scores, localization_scores
from .runs import RunFolder
from .store import atomic_write_text

__all__ = ["evaluate_run", "evaluate_records", "format_evaluation"]


def evaluate_records(images, maps, clustering, labels_csv: str | None = None) -> dict[str, Any]:
    """Metrics for one set of records (used by ``evaluate`` and by the benchmark)."""
    gt = load_ground_truth(images, labels_csv)
    true, classes = gt.label_ids()
    pred = np.asarray(clustering.labels)
    out: dict[str, Any] = {"n_images": len(images), "classes": classes, "clustering": clustering_scores(true, pred).as_dict()}
    anomalous = np.array([lab.lower() not in GOOD_NAMES for lab in gt.labels])
    masks = None
    if gt.has_masks:
        size = maps.map_size
        masks = np.stack([gt.load_mask(i, size) for i in range(len(images))])
    loc = localization_scores(np.asarray(maps.maps), np.asarray(maps.scores), masks, anomalous)
    out["localization"] = loc.as_dict()
    out["localization"]["masks"] = "pixel masks" if gt.has_masks else "none"
    return out


def evaluate_run(run_dir: str, labels_csv: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run; also writes ``<run>/evaluation.json``."""
    run = RunFolder.open(run_dir)
    result = evaluate_records(run.images(), run.record("maps"), run.record("clustering"), labels_csv)
    atomic_write_text(Path(run_dir) / "evaluation.json", json.dumps(result, indent=1))
    return result


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def format_evaluation(result: dict[str, Any]) -> str:
    c, l = result["clustering"], result["localization"]
    lines = [
        f"images: {result['n_images']}   classes ({len(result['classes'])}): {', '.join(result['classes'])}",
        "clustering    NMI    ARI    F1-micro  F1-macro  K",
        f"              {_fmt(c['nmi'])}  {_fmt(c['ari'])}  {_fmt(c['f1_micro'])}     {_fmt(c['f1_macro'])}     {c['n_clusters']}",
        "localization  PRO@0.3  AUROC-pixel  AUROC-image  (masks: " + l["masks"] + ")",
        f"              {_fmt(l['pro_30'])}    {_fmt(l['auroc_pixel'])}        {_fmt(l['auroc_image'])}",
    ]
    return "\n".join(lines)
