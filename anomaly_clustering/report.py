"""A static HTML page for a run: per-cluster galleries with anomaly maps (thin until the report issue lands)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .data import load_image
from .runs import RunFolder, output_name

__all__ = ["write_report"]


def write_report(run_dir: str, labels_csv: str | None = None, thumb: int = 160) -> Path:
    run = RunFolder.open(run_dir)
    images = run.images()
    clustering = run.record("clustering")
    maps = run.record("maps")
    out = Path(run_dir) / "report"
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    labels = np.asarray(clustering.labels)
    parts = [f"<html><head><meta charset='utf-8'><title>anomaly-cluster report</title></head><body><h1>{html.escape(str(run_dir))}</h1>"]
    for k in range(clustering.n_clusters):
        members = np.flatnonzero(labels == k)
        parts.append(f"<section class='cluster'><h2>cluster {k} ({len(members)} images)</h2>")
        for i in members[:200]:
            stem = output_name(images.names[i])
            img = Image.fromarray(load_image(images.paths[i]))
            img.thumbnail((thumb, thumb))
            img.save(out / "thumbs" / f"{stem}.jpg", quality=85)
            heat = Path(run_dir) / "maps" / f"{stem}.png"
            rel_heat = os.path.relpath(heat, out) if heat.exists() else ""
            parts.append(f"<figure style='display:inline-block'><img src='thumbs/{stem}.jpg' title='{html.escape(images.names[i])}'>" + (f"<img src='{rel_heat}' width='{thumb}'>" if rel_heat else "") + f"<figcaption>{html.escape(images.names[i])} · {float(maps.scores[i]):.3g}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts))
    return page
