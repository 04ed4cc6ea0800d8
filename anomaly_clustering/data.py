"""Image discovery, loading and validation, and ground truth from an MVTec-AD-style layout or a CSV.

Loads PNG / JPEG / BMP / TIFF in any mode PIL reads (grey, RGBA, palette, 16-bit) as 8-bit RGB. Type labels and
masks are for evaluation only: the pipeline never reads them.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .records import ImageSet

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "discover_images",
    "load_image_set",
    "load_image",
    "load_resized",
    "GroundTruth",
    "load_ground_truth",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Folders never searched for input images (they hold masks or annotations).
SKIPPED_FOLDERS = {"ground_truth", "annotations_voc", ".cache", "__pycache__"}


class DataError(ValueError):
    """Bad input data; the message names the file or folder."""


def _matches(rel: str, pattern: str) -> bool:
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, "*/" + pattern.lstrip("/"))


def discover_images(root: str | os.PathLike, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """Image files under ``root`` (recursive, sorted), as paths relative to ``root``. ``include``/``exclude`` are
    glob patterns matched against those relative paths (POSIX separators), or against any trailing part of them
    (``good/*`` also matches ``test/good/001.png``)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data {root}: no such folder")
    if root.is_file():
        raise DataError(f"--data {root}: expected a folder of images, got a file")
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_FOLDERS and not d.startswith("."))
        for f in filenames:
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                rel = Path(dirpath, f).relative_to(root).as_posix()
                if include and not any(_matches(rel, p) for p in include):
                    continue
                if exclude and any(_matches(rel, p) for p in exclude):
                    continue
                names.append(rel)
    return sorted(names)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image as H×W×3 uint8 RGB, whatever its mode or bit depth. Raises DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if im.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return arr


def load_resized(path: str | os.PathLike, size: int | tuple[int, int]) -> np.ndarray:
    """An image resized (bilinear, antialiased) to ``size`` (square side or (height, width)), H×W×3 uint8."""
    h, w = (size, size) if isinstance(size, int) else size
    img = Image.fromarray(load_image(path))
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image without decoding it."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_image_set(
    root: str | os.PathLike,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    strict: bool = False,
    min_images: int = 1,
) -> ImageSet:
    """Discover and validate the images of a folder. A corrupt or unreadable file is skipped with a warning that
    lists it (``strict=True``: an error instead). Raises DataError for an empty or missing folder."""
    root = Path(root).resolve()
    names = discover_images(root, include, exclude)
    if not names:
        raise DataError(f"--data {root}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    good, digests, bad = [], [], []
    for name in names:
        path = root / name
        try:
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:  # verify() leaves the file unusable; decode fully to catch truncation
                im.load()
                if im.size[0] < 2 or im.size[1] < 2:
                    raise DataError(f"{path}: image is {im.size[0]}×{im.size[1]} pixels, too small")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, DataError) as exc:
            if strict:
                raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc}); --strict is set") from None
            bad.append(name)
            continue
        good.append(name)
        digests.append(_digest(path))
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) in {root}: {', '.join(bad[:10])}{' …' if len(bad) > 10 else ''}",
            stacklevel=2,
        )
    if len(good) < min_images:
        raise DataError(f"--data {root}: {len(good)} readable image(s), at least {min_images} needed")
    return ImageSet(str(root), tuple(good), tuple(digests), tuple(bad))


@dataclass(frozen=True)
class GroundTruth:
    """Per-image type labels (strings) and, where known, mask file paths (None for a defect-free image, and
    ``has_masks`` False when the set has no masks at all)."""

    labels: tuple[str, ...]
    mask_paths: tuple[str | None, ...]
    has_masks: bool

    def label_ids(self) -> tuple[np.ndarray, list[str]]:
        classes = sorted(set(self.labels))
        lookup = {c: i for i, c in enumerate(classes)}
        return np.array([lookup[x] for x in self.labels]), classes

    def load_mask(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """Mask of image ``index`` at ``size`` (H, W) as bool; all-false for good images."""
        path = self.mask_paths[index]
        if path is None:
            return np.zeros(size, bool)
        with Image.open(path) as im:
            m = im.convert("L").resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(m) >= 128


GOOD_NAMES = {"good", "ok", "normal"}


def load_ground_truth(images: ImageSet, labels_csv: str | None = None) -> GroundTruth:
    """Ground truth for every image of the set: from a CSV (columns ``image,label[,mask]``, image paths relative
    to the data folder) or from the MVTec AD layout (``…/<type>/<image>``, masks in
    ``…/ground_truth/<type>/<stem>_mask.png``). Raises DataError naming what is missing."""
    root = Path(images.root)
    if labels_csv:
        rows: dict[str, tuple[str, str | None]] = {}
        with open(labels_csv, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "image" not in reader.fieldnames or "label" not in reader.fieldnames:
                raise DataError(f"--labels {labels_csv}: needs a header with columns 'image' and 'label'")
            for row in reader:
                mask = row.get("mask") or None
                if mask and not os.path.isabs(mask):
                    mask = str(Path(labels_csv).parent / mask)
                rows[row["image"]] = (row["label"], mask)
        missing = [n for n in images.names if n not in rows]
        if missing:
            raise DataError(f"--labels {labels_csv}: no row for {len(missing)} image(s), e.g. {missing[0]}")
        labels = tuple(rows[n][0] for n in images.names)
        masks = tuple(rows[n][1] for n in images.names)
        return GroundTruth(labels, masks, any(m is not None for m in masks))

    labels, masks = [], []
    for name in images.names:
        path = root / name
        type_dir = path.parent
        labels.append(type_dir.name)
        mask = None
        if type_dir.name.lower() not in GOOD_NAMES:
            for base in (type_dir.parent.parent, type_dir.parent):
                for ext in (".png", ".bmp", ".jpg", ".tif"):
                    cand = base / "ground_truth" / type_dir.name / f"{path.stem}_mask{ext}"
                    if cand.exists():
                        mask = str(cand)
                        break
                if mask:
                    break
        masks.append(mask)
    if len({*labels}) < 1 or all(p == "." for p in labels):
        raise DataError(f"{root}: no type folders (MVTec layout test/<type>/<image>); give --labels CSV instead")
    return GroundTruth(tuple(labels), tuple(masks), any(m is not None for m in masks))
