"""Export a run's (named) clusters as a labelled dataset.

``folders``  OUT/<name>/<image>                       one folder per cluster (copies, or links with ``link``)
``mvtec``    OUT/test/<name>/<image> + OUT/ground_truth/<name>/<stem>_mask.png   (no masks for ``good``)
``coco``     OUT/annotations.json + OUT/images/<image>  one instance (RLE mask, box, area) per connected region of
             an image's mask, category = its cluster's name (pycocotools encodes the RLE); images of a cluster named
             ``good``/``ok``/``normal`` are listed without instances

Only named clusters are exported unless ``include_unnamed`` (then as ``cluster-<id>``). Image file names are the
run's flattened names (``test/crack/001.png`` → ``test__crack__001.png``) so no two collide.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .data import GOOD_NAMES, DataError
from .labelling import LabelState, RunLabels
from .runs import output_name

__all__ = ["FORMATS", "LINKS", "export_run"]

FORMATS = ("folders", "mvtec", "coco")
LINKS = ("copy", "symlink", "hardlink")


def _place(src: Path, dst: Path, link: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link == "symlink":
        os.symlink(src.resolve(), dst)
    elif link == "hardlink":
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def _mask(labels: RunLabels, regions, index: int, name: str, size: tuple[int, int]) -> np.ndarray:
    """The run's mask of image ``index`` at its own size (H, W): the mask PNG when written, else the record resized."""
    png = labels.path / "masks" / f"{output_name(name)}.png"
    if png.is_file():
        with Image.open(png) as im:
            return np.asarray(im.convert("L")) >= 128
    small = np.asarray(regions.masks[index], np.uint8) * 255
    return np.asarray(Image.fromarray(small).resize((int(size[1]), int(size[0])), Image.NEAREST)) >= 128


def _normal(names) -> set[str]:
    """The names that mean defect-free (no masks, no COCO category)."""
    return {n for n in names if n.lower() in GOOD_NAMES}


def _selection(state: LabelState, include_unnamed: bool) -> dict[int, str]:
    chosen = {k: state.display(k) for k in state.clusters if include_unnamed or k in state.names}
    if not chosen:
        raise DataError("export: no named cluster; name clusters first (relabel --edits) or pass --include_unnamed true")
    return chosen


def export_run(run_dir: str, fmt: str, out_dir: str, link: str = "copy", include_unnamed: bool = False) -> dict[str, int]:
    """Write the export; return the number of images per exported cluster name."""
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if link not in LINKS:
        raise DataError(f"--link {link}: choose one of {', '.join(LINKS)}")
    labels = RunLabels(run_dir)
    state = labels.state()
    chosen = _selection(state, include_unnamed)
    images = labels.run.images()
    maps = labels.run.record("maps")
    regions = labels.run.record("regions")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    coco = {"info": {"description": f"anomaly-cluster export of {labels.path}"}, "images": [], "annotations": [], "categories": []}
    categories = {name: i + 1 for i, name in enumerate(sorted(set(chosen.values()) - _normal(chosen.values())))}
    coco["categories"] = [{"id": i, "name": n, "supercategory": "defect"} for n, i in categories.items()]
    for i, (name, k) in enumerate(zip(images.names, state.labels.tolist())):
        if k not in chosen:
            continue
        cname = chosen[k]
        counts[cname] = counts.get(cname, 0) + 1
        src = Path(images.paths[i])
        file = output_name(name) + src.suffix.lower()
        size = tuple(int(v) for v in maps.image_sizes[i])
        if fmt == "folders":
            _place(src, out / cname / file, link)
        elif fmt == "mvtec":
            _place(src, out / "test" / cname / file, link)
            if cname.lower() not in GOOD_NAMES:
                mask = _mask(labels, regions, i, name, size)
                (out / "ground_truth" / cname).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(out / "ground_truth" / cname / f"{output_name(name)}_mask.png")
        else:
            _place(src, out / "images" / file, link)
            coco["images"].append({"id": i + 1, "file_name": f"images/{file}", "height": size[0], "width": size[1]})
            if cname.lower() not in GOOD_NAMES:
                coco["annotations"] += _instances(_mask(labels, regions, i, name, size), i + 1, categories[cname], len(coco["annotations"]))
    if fmt == "coco":
        (out / "annotations.json").write_text(json.dumps(coco))
    return counts


def _instances(mask: np.ndarray, image_id: int, category: int, start: int) -> list[dict]:
    """One COCO annotation per connected region of ``mask`` (RLE segmentation, xywh box, pixel area)."""
    from pycocotools import mask as mask_utils

    comps, n = ndimage.label(mask)
    out = []
    for j in range(1, n + 1):
        m = np.asfortranarray(comps == j, dtype=np.uint8)
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"id": start + len(out) + 1, "image_id": image_id, "category_id": category, "segmentation": rle,
                    "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    return out
