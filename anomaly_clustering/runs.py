"""The run folder: what ``fit`` writes and ``predict`` / ``evaluate`` / ``report`` read.

    <run>/clusters.csv        image, cluster, anomaly score, threshold, region boxes (original image pixels), and
                              the map and mask files written for the image
    <run>/maps/<out>.npy      anomaly map at map resolution; <out>.png: heat map at the image's own size
    <run>/masks/<out>.png     binary mask at the image's own size
    <run>/records/            the four stage records (.npy + JSON), for evaluate and report
    <run>/model/              the fitted stage components + pipeline.json, for predict
    <run>/config.yaml         the resolved configuration;  summary.json: K, timings, cache reuse, peak memory
    <run>/k_selection.json    the K-selection curve (when K was estimated)
    <run>/cache/              the stage cache (unless --cache_dir points elsewhere)

``<out>`` is the image's path flattened (``test/crack/001.png`` → ``test__crack__001``), made unique within the run
by :func:`output_names` (``img.png`` and ``img.jpg`` → ``img_png``, ``img_jpg``). Outputs are assembled in a staging
folder and moved into place only once complete; ``summary.json`` goes last, so a run folder without it is unfinished.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from PIL import Image

from .data import DataError
from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Regions
from .store import StoreError, load_object, load_record, save_object, save_record

__all__ = ["write_run", "RunFolder", "output_name", "output_names", "write_predictions", "heat_png"]

OUTPUTS = ("clusters.csv", "maps", "masks", "records", "model", "config.yaml", "summary.json", "k_selection.json")


def output_name(image_name: str) -> str:
    """A flat file stem for an image's outputs (``test/crack/001.png`` → ``test__crack__001``); unique within a set
    only through :func:`output_names`."""
    stem = os.path.splitext(image_name)[0]
    return stem.replace("/", "__").replace("\\", "__")


def output_names(image_names: Sequence[str]) -> list[str]:
    """One flat file stem per image, unique within the set even on a case-insensitive file system: the plain
    :func:`output_name` where no other image shares it; else the extension is kept (``img.png`` → ``img_png``) and,
    if that still collides (``x/y.png`` and ``x__y.png``), a number is added (``x__y_png~2``), in set order."""
    plain = [output_name(n) for n in image_names]
    count: dict[str, int] = {}
    for stem in plain:
        count[stem.lower()] = count.get(stem.lower(), 0) + 1
    unique = [count[stem.lower()] == 1 for stem in plain]
    reserved = {stem.lower() for stem, u in zip(plain, unique) if u}
    out, used = [], set()
    for name, stem, u in zip(image_names, plain, unique):
        if not u:
            base = f"{stem}_{os.path.splitext(name)[1].lstrip('.') or 'noext'}"
            stem, k = base, 1
            while stem.lower() in used or stem.lower() in reserved:
                k += 1
                stem = f"{base}~{k}"
        used.add(stem.lower())
        out.append(stem)
    return out


def _resize(arr: np.ndarray, size: tuple[int, int], resample: int) -> Image.Image:
    img = Image.fromarray(arr)
    return img.resize((int(size[1]), int(size[0])), resample) if img.size != (int(size[1]), int(size[0])) else img


def heat_png(m: np.ndarray, lo: float, hi: float, size: tuple[int, int]) -> Image.Image:
    """A map as an RGB heat image (matplotlib's ``inferno``), scaled on the set-wide range [lo, hi]."""
    from matplotlib import colormaps

    norm = np.clip((np.asarray(m, np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = (colormaps["inferno"](norm)[..., :3] * 255).astype(np.uint8)
    return _resize(rgb, size, Image.BILINEAR)


def _boxes_in_image(regions: Regions, maps: AnomalyMaps, i: int) -> list[list[int]]:
    h, w = maps.map_size
    ih, iw = (int(v) for v in maps.image_sizes[i])
    out = []
    for r in regions.regions_of(i):
        x0, y0, x1, y1 = r.box
        out.append([round(x0 * iw / w), round(y0 * ih / h), round(x1 * iw / w), round(y1 * ih / h)])
    return out


def _write_table(path: Path, images: ImageSet, maps: AnomalyMaps, regions: Regions, clustering: Clustering, pngs: bool = True) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "cluster", "anomaly_score", "threshold", "n_regions", "regions", "map_file", "mask_file"])
    for i, (name, stem) in enumerate(zip(images.names, output_names(images.names))):
        boxes = _boxes_in_image(regions, maps, i)
        w.writerow([name, int(clustering.labels[i]), f"{float(maps.scores[i]):.6g}", f"{float(regions.thresholds[i]):.6g}", len(boxes), json.dumps(boxes),
                    f"maps/{stem}.npy", f"masks/{stem}.png" if pngs else ""])
    path.write_text(buf.getvalue())


def _write_maps(folder: Path, images: ImageSet, maps: AnomalyMaps, regions: Regions, pngs: bool) -> None:
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    arr = np.asarray(maps.maps, np.float32)
    lo, hi = float(np.percentile(arr, 1)), float(arr.max())
    for i, stem in enumerate(output_names(images.names)):
        np.save(folder / "maps" / f"{stem}.npy", arr[i])
        if pngs:
            size = tuple(int(v) for v in maps.image_sizes[i])
            heat_png(arr[i], lo, hi, size).save(folder / "maps" / f"{stem}.png")
            mask = np.asarray(regions.masks[i], bool).astype(np.uint8) * 255
            _resize(mask, size, Image.NEAREST).save(folder / "masks" / f"{stem}.png")


def write_run(run_dir: str | os.PathLike, result: Any, config: dict[str, Any], log: Sequence[str], save_pngs: bool = True, extra_summary: dict | None = None) -> Path:
    """Write every output of a fit into ``run_dir`` (staged, then moved into place)."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    stage = run / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
        _write_table(stage / "clusters.csv", result.images, result.maps, result.regions, result.clustering, save_pngs)
        _write_maps(stage, result.images, result.maps, result.regions, save_pngs)
        for kind, rec in (("maps", result.maps), ("regions", result.regions), ("embeddings", result.embeddings), ("clustering", result.clustering)):
            save_record(stage / "records" / kind, rec)
        (stage / "model").mkdir()
        for kind, comp in result.components.items():
            save_object(stage / "model" / f"{kind}.pkl", comp)
        (stage / "model" / "pipeline.json").write_text(
            json.dumps({"images": {"root": result.images.root, "names": list(result.images.names), "digests": list(result.images.digests)}, "n_clusters": result.clustering.n_clusters, "keys": result.keys}, indent=1)
        )
        (stage / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (stage / "summary.json").write_text(json.dumps(_summary(result, log, extra_summary), indent=1))
        if result.clustering.k_curve:
            (stage / "k_selection.json").write_text(json.dumps({"method": result.clustering.k_method, "chosen": int(result.clustering.n_clusters), "curve": {str(k): v for k, v in result.clustering.k_curve.items()}}, indent=1))
        _move_outputs(stage, run)
    except OSError as exc:
        if exc.errno == errno.ENOSPC and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(run)) from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return run


def _summary(result: Any, log: Sequence[str], extra: dict | None) -> dict[str, Any]:
    """``summary.json``: sizes, timings, cache reuse, memory, each stage's info and the run's log."""
    counts = np.bincount(np.asarray(result.clustering.labels), minlength=result.clustering.n_clusters)
    return {
        "n_images": len(result.images),
        "skipped_images": list(result.images.skipped),
        "n_clusters": int(result.clustering.n_clusters),
        "k_method": result.clustering.k_method,
        "cluster_sizes": counts.tolist(),
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "compute_seconds": {k: round(v, 3) for k, v in getattr(result, "compute_seconds", {}).items()},
        "cache_reused": result.cache_hits,
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "localizer_info": _jsonable(result.maps.info),
        "representation_info": _jsonable(result.embeddings.info),
        "clusterer_info": _jsonable(result.clustering.info),
        "stability": _stability_summary(getattr(result, "stability", None)),
        "log": list(log),
        **(extra or {}),
    }


def _stability_summary(stability: Any) -> dict[str, Any] | None:
    """``summary.json``'s ``stability`` entry: the figures, how long they took, whether they came from the cache."""
    if stability is None:
        return None
    return {**stability.to_dict(), **_jsonable({k: v for k, v in stability.info.items() if k != "key"})}


def _move_outputs(stage: Path, run: Path) -> None:
    """Replace the run's outputs by the staged ones item by item, ``summary.json`` last: the run reads as
    unfinished until it is in place."""
    (run / "summary.json").unlink(missing_ok=True)
    for name in sorted(OUTPUTS, key=lambda n: n == "summary.json"):
        src, dst = stage / name, run / name
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        if src.exists():
            os.replace(src, dst)


def _jsonable(d: Any) -> Any:
    try:
        json.dumps(d)
        return d
    except TypeError:
        return json.loads(json.dumps(d, default=str))


@dataclass
class RunFolder:
    """A finished run, read back."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunFolder":
        p = Path(path)
        missing = [f for f in ("clusters.csv", "summary.json", "config.yaml", "model/pipeline.json") if not (p / f).is_file()]
        if missing:
            raise DataError(f"--run {p}: not a finished anomaly-cluster run (no {', '.join(missing)})")
        return cls(p)

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "model" / "pipeline.json").read_text())

    @property
    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def images(self) -> ImageSet:
        m = self.meta["images"]
        return ImageSet(m["root"], tuple(m["names"]), tuple(m["digests"]))

    def record(self, kind: str) -> Any:
        cls = {"maps": AnomalyMaps, "regions": Regions, "embeddings": Embeddings, "clustering": Clustering}[kind]
        return load_record(self.path / "records" / kind, cls)

    def component(self, kind: str) -> Any:
        path = self.path / "model" / f"{kind}.pkl"
        if not path.exists():
            raise StoreError(f"--run {self.path}: missing fitted {kind} ({path})")
        try:
            return load_object(path)
        except StoreError as exc:
            raise StoreError(f"--run {self.path}: the run's model is damaged ({exc}); fit the run again") from None


def write_predictions(out_dir: str | os.PathLike, images: ImageSet, maps: AnomalyMaps, regions: Regions, clustering: Clustering, save_pngs: bool = True) -> Path:
    """Write ``predictions.csv`` (and maps/masks) for images assigned by a fitted run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
        _write_table(stage / "predictions.csv", images, maps, regions, clustering, save_pngs)
        _write_maps(stage, images, maps, regions, save_pngs)
        for name in ("predictions.csv", "maps", "masks"):
            dst = out / name
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            os.replace(stage / name, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out
