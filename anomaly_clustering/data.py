"""Image discovery, loading and validation, and ground truth from an MVTec-AD-style layout or a CSV.

Loads PNG / JPEG / BMP / TIFF in any mode PIL reads (grey, RGBA, palette, 16-bit) as 8-bit RGB. Type labels and
masks are for evaluation only: the pipeline never reads them.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    "MAX_PIXELS_ENV",
    "max_image_pixels",
    "duplicate_groups",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Folders never searched for input images (they hold masks or annotations).
SKIPPED_FOLDERS = {"ground_truth", "annotations_voc", ".cache", "__pycache__"}


MAX_PIXELS_ENV = "ANOMALY_CLUSTERING_MAX_PIXELS"
#: Largest image (width × height) read by default: PIL's own decompression-bomb limit. Raise it with the
#: environment variable ``ANOMALY_CLUSTERING_MAX_PIXELS``.
DEFAULT_MAX_PIXELS = 89_478_485
ORIENTATION_TAG = 0x0112  # EXIF orientation; values 5–8 swap width and height


class DataError(ValueError):
    """Bad input data; the message names the file or folder."""


def max_image_pixels() -> int:
    """The pixel limit (width × height) above which an image is refused as a possible decompression bomb."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise DataError(f"${MAX_PIXELS_ENV}={raw!r}: give a number of pixels, e.g. 200000000") from None
    if value < 1:
        raise DataError(f"${MAX_PIXELS_ENV}={raw!r}: must be positive")
    return value


def _open(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` under the pixel limit (PIL's own bomb check follows it); refuses larger images before decoding."""
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # PIL refuses at 2× its limit (and warns above 1×); we refuse above 1×
    fix = f"over the limit of {limit} pixels (a decompression bomb?); raise it with ${MAX_PIXELS_ENV}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image {fix}") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise DataError(f"{path}: {w}×{h} pixels is {fix}")
    return im


def _matches(rel: str, pattern: str) -> bool:
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, "*/" + pattern.lstrip("/"))


def discover_images(root: str | os.PathLike, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """Image files under ``root`` (recursive, sorted), as paths relative to ``root``. ``include``/``exclude`` are
    glob patterns matched against those relative paths (POSIX separators), or against any trailing part of them
    (``good/*`` also matches ``test/good/001.png``)."""
    return _walk(root, include, exclude)[0]


def _walk(root: str | os.PathLike, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(image files, entries with an image name that are not regular files: FIFOs, devices, broken or looping links)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data {root}: no such folder")
    if root.is_file():
        raise DataError(f"--data {root}: expected a folder of images, got a file")
    names: list[str] = []
    irregular: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_FOLDERS and not d.startswith("."))
        for f in filenames:
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                rel = Path(dirpath, f).relative_to(root).as_posix()
                if include and not any(_matches(rel, p) for p in include):
                    continue
                if exclude and any(_matches(rel, p) for p in exclude):
                    continue
                if not _is_regular_file(Path(dirpath, f)):  # a FIFO, socket, device or broken link is no image
                    irregular.append(rel)
                    continue
                names.append(rel)
    return sorted(names), sorted(irregular)


def _is_regular_file(path: Path) -> bool:
    """True for a regular file (or a link to one); never opens it, so a FIFO cannot block."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # broken link, link loop, permission
        return False


READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image as H×W×3 uint8 RGB in its displayed orientation (EXIF applied), whatever its mode or bit depth.
    Raises DataError naming the file."""
    try:
        with _open(path) as im:
            im.load()
            return _to_rgb8(_upright(im))
    except READ_ERRORS as exc:
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
    """(height, width) of an image as displayed (EXIF orientation applied), without decoding it."""
    with _open(path) as im:
        w, h = im.size
        return (w, h) if _orientation(im) in (5, 6, 7, 8) else (h, w)


def _upright(im: Image.Image) -> Image.Image:
    """The image as viewers show it (EXIF orientation applied); a damaged EXIF block leaves it as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - Pillow raises several kinds on broken EXIF data
        return im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block just means no rotation
        return 1


def _pixel_digest(rgb: np.ndarray) -> str:
    """Hash of the decoded pixels (and shape): two files holding the same picture get the same digest."""
    h = hashlib.sha1(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def duplicate_groups(images: ImageSet) -> list[list[int]]:
    """Groups (of two or more indices, in set order) of images with identical decoded pixels."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(images.digests):
        groups.setdefault(d, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def load_image_set(
    root: str | os.PathLike,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    strict: bool = False,
    min_images: int = 1,
) -> ImageSet:
    """Discover and validate the images of a folder. A corrupt or unreadable file is skipped with a warning that
    lists it (``strict=True``: an error instead); so is an image over the pixel limit (:func:`max_image_pixels`).
    Digests hash the decoded pixels, so the same picture saved twice (another compression, another format) is
    recognised: one warning names such duplicates. Raises DataError for an empty or missing folder."""
    root = Path(root).resolve()
    names, irregular = _walk(root, include, exclude)
    if irregular:
        warnings.warn(
            f"skipped {len(irregular)} entr{'y' if len(irregular) == 1 else 'ies'} in {root} with an image name that "
            f"{'is' if len(irregular) == 1 else 'are'} not a regular file (FIFO, device, broken or looping link): "
            f"{', '.join(irregular[:10])}{' …' if len(irregular) > 10 else ''}",
            stacklevel=2,
        )
    if not names:
        raise DataError(f"--data {root}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    good, digests, bad = _read_images(root, names, strict)
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) in {root}: {', '.join(bad[:10])}{' …' if len(bad) > 10 else ''}",
            stacklevel=2,
        )
    if len(good) < min_images:
        raise DataError(f"--data {root}: {len(good)} readable image(s), at least {min_images} needed")
    images = ImageSet(str(root), tuple(good), tuple(digests), tuple(bad))
    _warn_duplicates(images)
    return images


def _read_images(root: Path, names: Sequence[str], strict: bool) -> tuple[list[str], list[str], list[str]]:
    """Decode every image fully (catching truncation): (readable names, their pixel digests, unreadable names);
    ``strict``: an unreadable image is a DataError instead."""
    good, digests, bad = [], [], []
    for name in names:
        path = root / name
        try:
            with _open(path) as im:
                im.verify()
            with _open(path) as im:  # verify() leaves the file unusable; decode fully to catch truncation
                im.load()
                if im.size[0] < 2 or im.size[1] < 2:
                    raise DataError(f"{path}: image is {im.size[0]}×{im.size[1]} pixels, too small")
                digest = _pixel_digest(_to_rgb8(_upright(im)))
        except (*READ_ERRORS, DataError) as exc:
            if strict:
                raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc}); --strict is set") from None
            bad.append(name)
            continue
        good.append(name)
        digests.append(digest)
    return good, digests, bad


def _warn_duplicates(images: ImageSet) -> None:
    """One warning naming the groups of pixel-identical images (each group gets one cluster)."""
    groups = duplicate_groups(images)
    if groups and len(groups[0]) < len(images):  # all identical: the pipeline refuses the set with its own message
        good = images.names
        shown = "; ".join(" = ".join(good[i] for i in g[:8]) + (" …" if len(g) > 8 else "") for g in groups[:5])
        warnings.warn(
            f"{sum(len(g) for g in groups)} images in {images.root} are pixel-identical copies in {len(groups)} group(s) "
            f"(each group gets one cluster): {shown}{' …' if len(groups) > 5 else ''}",
            stacklevel=3,
        )


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
        if not Path(labels_csv).is_file():
            raise DataError(f"--labels {labels_csv}: no such file")
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
    if len({*labels}) < 2:
        where = "directly in the folder" if all(Path(root / n).parent == root for n in images.names) else f"all in one folder ({labels[0]})"
        raise DataError(f"{root}: no ground-truth labels: the images are {where}, not in two or more type folders "
                        "(MVTec layout test/<type>/<image>); give --labels CSV")
    return GroundTruth(tuple(labels), tuple(masks), any(m is not None for m in masks))
