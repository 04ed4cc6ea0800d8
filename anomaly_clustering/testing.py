"""Conformance kit for plugin authors: ``check_localizer``, ``check_binarizer``, ``check_representation``,
``check_clusterer`` and ``check_classifier`` run a plugin on tiny generated images and fail with one clear
:class:`ConformanceError` (an ``AssertionError``, so pytest shows it) naming the plugin and the broken rule.

Use them from your own pytest::

    from anomaly_clustering.testing import check_localizer

    def test_my_localizer():
        check_localizer(MyLocalizer, input_size=64)

Each check takes a class (instantiated with ``**options``) or an instance, and verifies the interface contract:
scikit-learn conventions (parameters stored unchanged in ``__init__``, ``get_params`` / ``clone`` round trip, type
hints on every parameter, learned attributes ending in ``_``, ``fit`` returning ``self``, a picklable fitted
component without memory-mapped arrays), record shapes and dtypes, determinism under a fixed seed, and that inputs
are not mutated. Images are the generated example set (``anomaly_clustering.examples``) written to a temporary
folder once per process; stages run inside ``runtime.settings`` with a temporary cache, quiet, on the CPU.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import inspect
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import runtime
from .interfaces import INTERFACE_VERSIONS, Binarizer, ClassifierPreset, Clusterer, Localizer, Representation
from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Regions

__all__ = [
    "ConformanceError",
    "example_images",
    "object_images",
    "leaf_images",
    "example_maps",
    "example_regions",
    "example_embeddings",
    "check_localizer",
    "check_binarizer",
    "check_representation",
    "check_clusterer",
    "check_classifier",
    "check_plugin",
]

#: Size of the generated images (pixels) and of the synthetic anomaly maps the later stages receive.
IMAGE_SIZE = 64
MAP_SIZE = 32


class ConformanceError(AssertionError):
    """A plugin breaks its interface contract; the message names the plugin and the rule."""


# ------------------------------------------------------------------------------------------------- inputs
_TMP: dict[str, Path] = {}


def _tmp_root() -> Path:
    if "root" not in _TMP:
        _TMP["root"] = Path(tempfile.mkdtemp(prefix="anomaly_clustering_conformance_"))
        atexit.register(shutil.rmtree, _TMP["root"], True)
    return _TMP["root"]


def example_images(folder: str | Path | None = None, per_kind: int = 2, n_good: int = 2, size: int = IMAGE_SIZE, seed: int = 0) -> ImageSet:
    """A tiny generated set (good + three defect kinds, MVTec layout with masks) as an :class:`ImageSet`.
    Written to ``folder``, or once per process to a temporary folder."""
    from .data import load_image_set
    from .examples import make_example_set

    if folder is None:
        folder = _tmp_root() / f"images_{per_kind}_{n_good}_{size}_{seed}"
    folder = Path(folder)
    if not (folder / "test").exists():
        make_example_set(folder, per_kind=per_kind, n_good=n_good, size=size, seed=seed)
    return load_image_set(folder / "test")


def object_images(folder: str | Path, n: int = 12, defect_every: int = 3, size: int = 96, seed: int = 0) -> tuple[ImageSet, np.ndarray, np.ndarray]:
    """A tiny OBJECT set: a bright disc (jittered centre and shade) on a plain background; every ``defect_every``-th
    image gets a dark spot inside the disc. Returns the set, the defect masks and the disc-outline masks (a 5 px
    ring), all ``size``×``size``: what a localizer must tell apart (the defect) from what every image has (the rim)."""
    from PIL import Image

    from .data import load_image_set

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = 30 * size / 96
    defects, rims = [], []
    for i in range(n):
        cy, cx = size / 2 + rng.uniform(-4, 4, 2) * size / 96
        r = np.hypot(yy - cy, xx - cx)
        img = np.where(r < radius, 0.75 + rng.normal(0, 0.01), 0.2) + rng.normal(0, 0.01, (size, size))
        mask = np.zeros((size, size), bool)
        if i % defect_every == 0:
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(5, 15) * size / 96
            mask = np.hypot(yy - cy - d * np.sin(a), xx - cx - d * np.cos(a)) < 6 * size / 96
            img = np.where(mask, 0.1, img)
        rgb = np.clip(np.repeat(img[..., None], 3, axis=2), 0, 1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        defects.append(mask)
        rims.append(np.abs(r - radius) < 2.5 * size / 96)
    return load_image_set(folder), np.stack(defects), np.stack(rims)


def leaf_images(folder: str | Path, n: int = 24, size: int = 128, seed: int = 0) -> tuple[ImageSet, np.ndarray, np.ndarray]:
    """A harder OBJECT set, like photographed leaves: a striped green ellipse whose place, size and angle all vary, on
    a plain light background; every other image gets a brown spot inside it. Returns the set, the defect masks and
    the outline masks. Within-image localizers (FCA) raise the outline here, because it differs in every image: at
    512 px by half as much as the spot, with a short-trained VAE at 128 px by more (benchmarks/leaf_localization.py)."""
    from PIL import Image

    from .data import load_image_set

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    k = size / 256
    defects, rims = [], []
    for i in range(n):
        cy, cx = size / 2 + rng.uniform(-40, 40, 2) * k
        a, b, angle = rng.uniform(60, 95) * k, rng.uniform(35, 60) * k, rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / a
        v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / b
        r = np.sqrt(u * u + v * v)
        leaf = np.array([0.25, 0.55, 0.2]) + rng.normal(0, 0.03, 3) + 0.05 * np.sin(u * 20)[..., None]
        img = np.where((r < 1)[..., None], leaf, 0.85) + rng.normal(0, 0.01, (size, size, 3))
        mask = np.zeros((size, size), bool)
        if i % 2 == 0:
            d, phi = rng.uniform(0, 0.5), rng.uniform(0, 2 * np.pi)
            mask = np.hypot(yy - cy - d * b * np.sin(phi), xx - cx - d * a * np.cos(phi)) < rng.uniform(7, 14) * k
            img = np.where(mask[..., None], np.array([0.45, 0.3, 0.1]), img)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        defects.append(mask)
        rims.append(np.abs(r - 1) < 0.06)
    return load_image_set(folder), np.stack(defects), np.stack(rims)


def example_maps(images: ImageSet, size: int = MAP_SIZE, seed: int = 0) -> AnomalyMaps:
    """Synthetic anomaly maps from the set's ground-truth masks (smoothed, plus a little noise), as a localizer
    would give them: maps at ``size``×``size``, image sizes from the files."""
    from scipy import ndimage

    from .data import image_size, load_ground_truth

    gt = load_ground_truth(images)
    rng = np.random.default_rng(seed)
    masks = np.stack([gt.load_mask(i, (size, size)) for i in range(len(images))]).astype(np.float32)
    maps = np.stack([ndimage.gaussian_filter(m, 1.0) for m in masks]) + 0.05 * rng.random(masks.shape, dtype=np.float32)
    maps = maps.astype(np.float32)
    sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
    return AnomalyMaps(maps, maps.reshape(len(images), -1).max(1), sizes, {"method": "synthetic (conformance kit)"})


def example_regions(maps: AnomalyMaps, threshold: float = 0.3) -> Regions:
    """Masks and regions of the synthetic maps at a fixed threshold."""
    from .regions import masks_to_regions

    masks, regions = masks_to_regions(np.asarray(maps.maps) > threshold, maps.maps, 1)
    return Regions(masks, np.full(len(maps), threshold, np.float32), regions, {"method": "fixed (conformance kit)"})


def example_embeddings(n_clusters: int = 3, per_cluster: int = 8, seed: int = 0, regions_per_image: int = 1) -> tuple[Embeddings, np.ndarray]:
    """Well-separated clusters that are also valid class probabilities (noisy one-hot rows summing to 1), so
    both distance-based clusterers and probability-merging ones can run on them. Returns (embeddings, truth)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(n_clusters), per_cluster)
    n = len(truth)
    rows, index = [], []
    for r in range(regions_per_image):
        v = np.eye(n_clusters)[truth] * 0.9 + rng.uniform(0, 0.1, (n, n_clusters))
        rows.append(v / v.sum(1, keepdims=True))
        index.append(np.arange(n))
    vectors = np.concatenate(rows).astype(np.float32)
    image_index = np.concatenate(index)
    weights = None if regions_per_image == 1 else np.ones(len(image_index), np.float32)
    return Embeddings(vectors, image_index, n, weights, {"kind": "probabilities"}), truth


# ------------------------------------------------------------------------------------------------ helpers
def _label(kind: str, obj: Any) -> str:
    cls = obj if inspect.isclass(obj) else type(obj)
    return f"{kind} {cls.__module__}.{cls.__qualname__}"


def _fail(label: str, message: str) -> ConformanceError:
    return ConformanceError(f"{label}: {message}")


def _call(label: str, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; any exception becomes a ConformanceError saying which call raised what."""
    try:
        return fn()
    except ConformanceError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
        raise _fail(label, f"{what} raised {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _stage_settings(seed: int) -> Iterator[None]:
    cache = runtime.current().cache_dir or str(_tmp_root() / "cache")
    with runtime.settings(device="cpu", quiet=True, cache_dir=cache):
        _seed_everything(seed)
        yield


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _instantiate(label: str, interface: type, obj_or_cls: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(obj_or_cls):
        if not issubclass(obj_or_cls, interface):
            raise _fail(label, f"does not subclass anomaly_clustering.interfaces.{interface.__name__}")
        if inspect.isabstract(obj_or_cls):
            raise _fail(label, f"is abstract: implement {', '.join(sorted(obj_or_cls.__abstractmethods__))}")
        params = inspect.signature(obj_or_cls.__init__).parameters
        unknown = [k for k in options if k not in params]
        if unknown:
            raise _fail(label, f"has no option {unknown[0]!r} (options: {', '.join(p for p in params if p != 'self')})")
        return _call(label, "__init__", lambda: obj_or_cls(**options))
    if not isinstance(obj_or_cls, interface):
        raise _fail(label, f"is a {type(obj_or_cls).__name__}, not a {interface.__name__}")
    if options:
        _call(label, "set_params", lambda: obj_or_cls.set_params(**options))
    return obj_or_cls


def _check_params(label: str, kind: str, est: Any) -> None:
    """Scikit-learn parameter conventions, type hints, interface version, summary line."""
    from sklearn.base import clone

    cls = type(est)
    if getattr(cls, "interface_version", None) != INTERFACE_VERSIONS[kind]:
        raise _fail(label, f"declares interface_version {getattr(cls, 'interface_version', None)}, expected {INTERFACE_VERSIONS[kind]}")
    if not cls.summary():
        raise _fail(label, "has no docstring: its first line is the summary `anomaly-cluster list` shows")
    sig = inspect.signature(cls.__init__)
    for name, p in sig.parameters.items():
        if name == "self":
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise _fail(label, f"__init__ takes *{name}: list every option as a named parameter (the CLI builds --{kind}.<option> from them)")
        if p.annotation is inspect.Parameter.empty:
            raise _fail(label, f"__init__ parameter {name!r} has no type hint (the CLI needs it to parse --{kind}.{name})")
        if not hasattr(est, name):
            raise _fail(label, f"__init__ does not store parameter {name!r} as self.{name} (get_params and clone need it)")
    params = _call(label, "get_params()", lambda: est.get_params(deep=False))
    learned = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    if learned:
        raise _fail(label, f"__init__ sets learned attribute(s) {learned}; learned state belongs in fit")
    twin = _call(label, "clone()", lambda: clone(est))
    _same_params(label, "clone()", params, twin.get_params(deep=False))
    rebuilt = _call(label, f"{cls.__name__}(**get_params())", lambda: cls(**params))
    _same_params(label, f"{cls.__name__}(**get_params())", params, rebuilt.get_params(deep=False))


def _same_params(label: str, what: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    try:
        equal = a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    except Exception:  # noqa: BLE001 - incomparable values count as different
        equal = False
    if not equal:
        raise _fail(label, f"{what} does not reproduce the parameters: {a} vs {b}")


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(x, y))
    return bool(x == y) or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))


def _check_fitted(label: str, est: Any, before: set[str], params: dict[str, Any]) -> None:
    """After fit: new public attributes end in ``_``, parameters are unchanged, the component pickles and holds
    no memory-mapped arrays (the run folder stores it)."""
    new = [k for k in vars(est) if k not in before and not k.startswith("_") and not k.endswith("_")]
    if new:
        raise _fail(label, f"fit set attribute(s) {new} that do not end in '_' (learned state must, parameters must not change)")
    _same_params(label, "fit (parameters changed during fit)", params, est.get_params(deep=False))
    for k, v in vars(est).items():
        if isinstance(v, np.memmap) or type(v).__name__ == "FeatureArray":
            raise _fail(label, f"keeps {type(v).__name__} in self.{k}; fitted components are pickled into the run folder: store small learned state only")
    blob = _call(label, "pickle.dumps(fitted component)", lambda: pickle.dumps(est, protocol=pickle.HIGHEST_PROTOCOL))
    _call(label, "pickle.loads(fitted component)", lambda: pickle.loads(blob))


def _snapshot(record: Any) -> dict[str, Any]:
    return {k: np.array(v, copy=True) for k, v in vars(record).items() if isinstance(v, np.ndarray)} | {"__regions__": copy.deepcopy(getattr(record, "regions", None))}


def _check_unmutated(label: str, what: str, record: Any, snap: dict[str, Any]) -> None:
    for k, v in snap.items():
        now = getattr(record, k, None) if k != "__regions__" else getattr(record, "regions", None)
        same = np.array_equal(np.asarray(now), v, equal_nan=v.dtype.kind == "f") if isinstance(v, np.ndarray) else now == v
        if not same:
            raise _fail(label, f"modified its input {what}.{k.strip('_')} in place")


def _image_hashes(images: ImageSet) -> list[str]:
    return [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in images.paths]


def _close(a: Any, b: Any, atol: float) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return bool(np.allclose(a, b, atol=atol, rtol=1e-4, equal_nan=True))
    return bool(np.array_equal(a, b))


def _refit_seed(est: Any, seed: int) -> int:
    """The global seed for the determinism check's second fit: the same one, or — for a plugin that declares
    ``uses_global_rng = False`` (its cached result is shared by runs with different seeds) — another one, so
    that the check also tests that claim."""
    return seed if getattr(est, "uses_global_rng", True) else seed + 1


def _check_deterministic(label: str, what: str, first: dict[str, Any], second: dict[str, Any], atol: float, est: Any = None) -> None:
    for k in first:
        if not _close(first[k], second[k], atol):
            if est is not None and not getattr(est, "uses_global_rng", True):
                raise _fail(label, f"declares uses_global_rng = False, but {what} changes with the global seed: {k} differs "
                            "(seed its own generators from a seed parameter, or leave uses_global_rng True)")
            raise _fail(label, f"{what} is not deterministic under a fixed seed: {k} differs between two runs (give it a seed parameter)")


# ------------------------------------------------------------------------------------------------- checks
def check_localizer(obj_or_cls: Any, images: ImageSet | None = None, seed: int = 0, deterministic: bool = True, atol: float = 1e-4, **options: Any) -> AnomalyMaps:
    """Check a :class:`Localizer` (class or instance; ``options`` go to its ``__init__``). Returns its maps."""
    label = _label("localizer", obj_or_cls)
    est = _instantiate(label, Localizer, obj_or_cls, options)
    _check_params(label, "localizer", est)
    from sklearn.base import clone

    images = images or example_images()
    n = len(images)
    hashes = _image_hashes(images)
    twin = clone(est)
    params, before = est.get_params(deep=False), set(vars(est))
    with _stage_settings(seed):
        fitted = _call(label, "fit(images)", lambda: est.fit(images))
    if fitted is not est:
        raise _fail(label, "fit must return self")
    _check_fitted(label, est, before, params)
    with _stage_settings(seed):
        maps = _call(label, "predict(images)", lambda: est.predict(images))
    _check_maps(label, maps, images)
    subset = images.subset([n - 1, 0])
    with _stage_settings(seed):
        sub = _call(label, "predict(new images)", lambda: est.predict(subset))
    _check_maps(label, sub, subset)
    if _image_hashes(images) != hashes:
        raise _fail(label, "modified the image files")
    if deterministic:
        with _stage_settings(_refit_seed(est, seed)):
            again = _call(label, "fit(images) on a clone", lambda: twin.fit(images).predict(images))
        _check_deterministic(label, "fit + predict", {"maps": maps.maps, "scores": maps.scores}, {"maps": again.maps, "scores": again.scores}, atol, est)
    return maps


def _check_maps(label: str, maps: Any, images: ImageSet) -> None:
    if not isinstance(maps, AnomalyMaps):
        raise _fail(label, f"predict must return AnomalyMaps, got {type(maps).__name__}")
    n = len(images)
    arr = np.asarray(maps.maps)
    if arr.shape[0] != n:
        raise _fail(label, f"returned {arr.shape[0]} maps for {n} images (maps must be N×H×W, one per image in set order)")
    if arr.dtype.kind != "f":
        raise _fail(label, f"maps must be floating point, got {arr.dtype}")
    if not np.all(np.isfinite(arr)) or not np.all(np.isfinite(np.asarray(maps.scores, np.float64))):
        raise _fail(label, "maps or scores contain NaN or infinity")
    from .data import image_size

    expected = np.array([image_size(p) for p in images.paths]).reshape(n, 2)
    if not np.array_equal(np.asarray(maps.image_sizes), expected):
        raise _fail(label, f"image_sizes must be each image's (height, width): got {np.asarray(maps.image_sizes).tolist()[:3]}…, expected {expected.tolist()[:3]}…")


def check_binarizer(obj_or_cls: Any, images: ImageSet | None = None, maps: AnomalyMaps | None = None, seed: int = 0, deterministic: bool = True, **options: Any) -> Regions:
    """Check a :class:`Binarizer` on synthetic maps of the example images. Returns its regions."""
    label = _label("binarizer", obj_or_cls)
    est = _instantiate(label, Binarizer, obj_or_cls, options)
    _check_params(label, "binarizer", est)
    from sklearn.base import clone

    images = images or example_images()
    maps = maps or example_maps(images)
    snap = _snapshot(maps)
    twin = clone(est)
    params, before = est.get_params(deep=False), set(vars(est))
    with _stage_settings(seed):
        fitted = _call(label, "fit(maps, images)", lambda: est.fit(maps, images))
    if fitted is not est:
        raise _fail(label, "fit must return self")
    _check_fitted(label, est, before, params)
    with _stage_settings(seed):
        regions = _call(label, "transform(maps, images)", lambda: est.transform(maps, images))
    _check_regions(label, regions, maps)
    _check_unmutated(label, "maps", maps, snap)
    if deterministic:
        with _stage_settings(_refit_seed(est, seed)):
            again = _call(label, "fit_transform on a clone", lambda: twin.fit_transform(maps, images))
        _check_deterministic(label, "fit + transform", {"masks": regions.masks, "thresholds": regions.thresholds}, {"masks": again.masks, "thresholds": again.thresholds}, 1e-6, est)
    return regions


def _check_regions(label: str, regions: Any, maps: AnomalyMaps) -> None:
    if not isinstance(regions, Regions):
        raise _fail(label, f"transform must return Regions, got {type(regions).__name__}")
    masks = np.asarray(regions.masks)
    if masks.shape != np.asarray(maps.maps).shape:
        raise _fail(label, f"masks must have the maps' shape {tuple(np.asarray(maps.maps).shape)}, got {masks.shape}")
    if masks.dtype != bool:
        raise _fail(label, f"masks must be bool, got {masks.dtype}")
    h, w = maps.map_size
    for r in regions.regions:
        x0, y0, x1, y1 = r.box
        if not (0 <= r.image_index < len(maps)) or not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h) or r.area < 1:
            raise _fail(label, f"region {r} is outside the {len(maps)} maps of {h}×{w} pixels or empty (boxes are x0, y0, x1, y1, end-exclusive)")
        if not masks[r.image_index, y0:y1, x0:x1].any():
            raise _fail(label, f"region {r} covers no mask pixel")


def check_representation(obj_or_cls: Any, images: ImageSet | None = None, maps: AnomalyMaps | None = None, regions: Regions | None = None, seed: int = 0, deterministic: bool = True, atol: float = 1e-4, transform_new_images: bool = True, **options: Any) -> Embeddings:
    """Check a :class:`Representation` on the example images with synthetic maps and regions. Returns its
    embeddings of the whole set. ``transform_new_images=False`` for a transductive method that can only embed
    the set it was fitted on (its ``transform`` of other images must then raise a ValueError or
    NotImplementedError saying so)."""
    label = _label("representation", obj_or_cls)
    est = _instantiate(label, Representation, obj_or_cls, options)
    _check_params(label, "representation", est)
    from sklearn.base import clone

    images = images or example_images()
    maps = maps or example_maps(images)
    regions = regions or example_regions(maps)
    snaps = (_snapshot(maps), _snapshot(regions))
    hashes = _image_hashes(images)
    twin = clone(est)
    params, before = est.get_params(deep=False), set(vars(est))
    with _stage_settings(seed):
        fitted = _call(label, "fit(images, maps, regions)", lambda: est.fit(images, maps, regions))
    if fitted is not est:
        raise _fail(label, "fit must return self")
    _check_fitted(label, est, before, params)
    with _stage_settings(seed):
        emb = _call(label, "transform(images, maps, regions)", lambda: est.transform(images, maps, regions))
    _check_embeddings(label, emb, len(images))
    _check_new_images(label, est, images, maps, regions, emb.vectors, seed, transform_new_images)
    _check_unmutated(label, "maps", maps, snaps[0])
    _check_unmutated(label, "regions", regions, snaps[1])
    if _image_hashes(images) != hashes:
        raise _fail(label, "modified the image files")
    if deterministic:
        with _stage_settings(_refit_seed(est, seed)):
            again = _call(label, "fit_transform on a clone", lambda: twin.fit_transform(images, maps, regions))
        _check_deterministic(label, "fit + transform", {"vectors": emb.vectors, "image_index": emb.image_index}, {"vectors": again.vectors, "image_index": again.image_index}, atol, est)
    return emb


def _check_new_images(label: str, est: Any, images: ImageSet, maps: AnomalyMaps, regions: Regions, vectors: Any, seed: int, supported: bool) -> None:
    """``transform`` of three images in another order: embeddings of the fitted width, or — for a transductive
    method (``supported`` False) — a ValueError / NotImplementedError saying it cannot."""
    idx = [len(images) - 1, 0, 1]
    sub_maps = AnomalyMaps(np.asarray(maps.maps)[idx], np.asarray(maps.scores)[idx], np.asarray(maps.image_sizes)[idx])
    sub_regions = example_regions(sub_maps, float(np.asarray(regions.thresholds)[0]) if np.isfinite(np.asarray(regions.thresholds)[0]) else 0.3)
    if supported:
        with _stage_settings(seed):
            sub = _call(label, "transform(new images)", lambda: est.transform(images.subset(idx), sub_maps, sub_regions))
        _check_embeddings(label, sub, len(idx))
        if np.asarray(sub.vectors).shape[1] != np.asarray(vectors).shape[1]:
            raise _fail(label, "transform of new images gives another embedding width than on the fitted set")
        return
    try:
        with _stage_settings(seed):
            est.transform(images.subset(idx), sub_maps, sub_regions)
    except (ValueError, NotImplementedError):
        return
    raise _fail(label, "cannot embed new images (transform_new_images=False) but transform of new images did not raise")


def _check_embeddings(label: str, emb: Any, n: int) -> None:
    if not isinstance(emb, Embeddings):
        raise _fail(label, f"transform must return Embeddings, got {type(emb).__name__}")
    if emb.n_images != n:
        raise _fail(label, f"returned embeddings for n_images={emb.n_images}, expected {n} (one set, in order)")
    v = np.asarray(emb.vectors)
    if v.ndim != 2 or v.shape[1] < 1 or v.shape[0] < 1:
        raise _fail(label, f"vectors must be M×D with M, D ≥ 1, got shape {v.shape}")
    if v.dtype.kind != "f" or not np.all(np.isfinite(v)):
        raise _fail(label, f"vectors must be finite floats, got {v.dtype}{'' if np.all(np.isfinite(v)) else ' with NaN/inf'}")


def check_clusterer(obj_or_cls: Any, embeddings: Embeddings | None = None, truth: np.ndarray | None = None, n_clusters: int = 3, min_ari: float | None = 0.9, seed: int = 0, **options: Any) -> Clustering:
    """Check a :class:`Clusterer` on well-separated clusters (per image, then two rows per image); ``min_ari``:
    the adjusted Rand index it must reach on them (None: not checked). Returns its clustering."""
    label = _label("clusterer", obj_or_cls)
    est = _instantiate(label, Clusterer, obj_or_cls, options)
    if "n_clusters" not in inspect.signature(type(est).__init__).parameters:
        raise _fail(label, "__init__ needs an n_clusters parameter (the pipeline sets it)")
    _check_params(label, "clusterer", est)
    from sklearn.base import clone
    from sklearn.metrics import adjusted_rand_score

    if embeddings is None:  # one row per image, then two rows (regions) per image
        cases = [example_embeddings(n_clusters, seed=seed), example_embeddings(n_clusters, seed=seed, regions_per_image=2)]
    else:
        cases = [(embeddings, truth)]
    result: Clustering | None = None
    for emb, truth in cases:
        snap = _snapshot(emb)
        model = _call(label, f"set_params(n_clusters={n_clusters})", lambda: clone(est).set_params(n_clusters=n_clusters))
        twin = clone(model)
        params, before = model.get_params(deep=False), set(vars(model))
        with _stage_settings(seed):
            res = _call(label, "fit_predict(embeddings)", lambda: model.fit_predict(emb))
        _check_clustering(label, res, emb.n_images, n_clusters)
        _check_fitted(label, model, before, params)
        _check_unmutated(label, "embeddings", emb, snap)
        if truth is not None and min_ari is not None:
            ari = adjusted_rand_score(truth, np.asarray(res.labels))
            if ari < min_ari:
                raise _fail(label, f"recovers well-separated clusters with ARI {ari:.3f} < {min_ari}")
        with _stage_settings(_refit_seed(model, seed)):
            again = _call(label, "fit_predict on a clone", lambda: twin.fit_predict(emb))
        _check_deterministic(label, "fit_predict", {"labels": res.labels}, {"labels": again.labels}, 0, model)
        if getattr(type(model), "supports_predict", True):
            new, _ = example_embeddings(n_clusters, per_cluster=2, seed=seed + 1)
            with _stage_settings(seed):
                pred = _call(label, "predict(new embeddings)", lambda: model.predict(new))
            _check_clustering(label, pred, new.n_images, n_clusters)
        else:
            try:
                model.predict(emb)
            except NotImplementedError:
                pass
            else:
                raise _fail(label, "declares supports_predict = False but predict did not raise NotImplementedError")
        result = result or res
    assert result is not None
    return result


def _check_clustering(label: str, res: Any, n: int, k: int) -> None:
    if not isinstance(res, Clustering):
        raise _fail(label, f"must return Clustering, got {type(res).__name__}")
    labels = np.asarray(res.labels)
    if labels.shape != (n,):
        raise _fail(label, f"labels must have one entry per image, shape ({n},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise _fail(label, f"labels must be integers, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= res.n_clusters or res.n_clusters < 1:
        raise _fail(label, f"labels must lie in 0…n_clusters−1 = {res.n_clusters - 1}, got {labels.min()}…{labels.max()}")
    if res.n_clusters != k:
        raise _fail(label, f"was asked for n_clusters={k} but returned n_clusters={res.n_clusters}")
    if res.probabilities is not None and np.asarray(res.probabilities).shape != (n, res.n_clusters):
        raise _fail(label, f"probabilities must be N×K = ({n}, {res.n_clusters}), got {np.asarray(res.probabilities).shape}")


def check_classifier(preset: Any) -> ClassifierPreset:
    """Check a :class:`ClassifierPreset`: its parts name usable plugins and their options exist."""
    from . import registry

    label = f"classifier preset {preset!r:.80}"
    if not isinstance(preset, ClassifierPreset):
        raise _fail(label, f"is a {type(preset).__name__}, not an anomaly_clustering.interfaces.ClassifierPreset")
    if preset.interface_version != INTERFACE_VERSIONS["classifier"]:
        raise _fail(label, f"declares interface_version {preset.interface_version}, expected {INTERFACE_VERSIONS['classifier']}")
    if not preset.summary():
        raise _fail(label, "has no description (what `anomaly-cluster list` shows)")
    for kind, spec in preset.parts().items():
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise _fail(label, f"its {kind} part has no plugin name: {spec}")
        _call(label, f"{kind} {name!r} with options {spec}", lambda: registry.create(kind, name, **spec))
    return preset


CHECKS: dict[str, Callable[..., Any]] = {
    "localizer": check_localizer,
    "binarizer": check_binarizer,
    "representation": check_representation,
    "clusterer": check_clusterer,
    "classifier": check_classifier,
}


def check_plugin(kind: str, obj_or_cls: Any, **options: Any) -> Any:
    """The check of ``kind`` (``localizer``, ``binarizer``, ``representation``, ``clusterer``, ``classifier``)."""
    if kind not in CHECKS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(CHECKS)}")
    return CHECKS[kind](obj_or_cls, **options)
