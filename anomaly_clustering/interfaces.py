"""The four stage interfaces and the classifier preset: the whole plugin contract, in one short module.

Scikit-learn conventions: parameters only in ``__init__`` (stored under the same names, so ``get_params`` and
``clone`` work), learned state in attributes ending in ``_``, ``fit`` returns ``self``. Every stage receives the
:class:`ImageSet` (the root record) and the records of the stages before it, never another stage's internals.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from sklearn.base import BaseEstimator

from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Regions

__all__ = [
    "INTERFACE_VERSIONS",
    "Localizer",
    "Binarizer",
    "Representation",
    "Clusterer",
    "ClassifierPreset",
    "STAGE_INTERFACES",
    "preset_init",
]

#: The version of each interface. A plugin inherits its base's version; one that declares another
#: ``interface_version`` was written against an incompatible contract and is listed as broken.
INTERFACE_VERSIONS: dict[str, int] = {"localizer": 1, "binarizer": 1, "representation": 1, "clusterer": 1, "classifier": 1}


def preset_init(init: Callable[..., None], **defaults: Any) -> Callable[..., None]:
    """``init`` with other defaults for some of its parameters: the ``__init__`` of a preset subclass (a plugin
    registered under its own name with tuned defaults), with the same options under the same names, so that the
    CLI, ``get_params`` and ``clone`` all see the new defaults."""
    signature = inspect.signature(init)
    unknown = sorted(set(defaults) - set(signature.parameters))
    if unknown:
        raise TypeError(f"preset_init: {init.__qualname__} has no parameter {unknown[0]!r}")
    preset = signature.replace(parameters=[p.replace(default=defaults[p.name]) if p.name in defaults else p for p in signature.parameters.values()])

    @functools.wraps(init)
    def __init__(*args: Any, **kwargs: Any) -> None:
        bound = preset.bind(*args, **kwargs)
        bound.apply_defaults()
        init(*bound.args, **bound.kwargs)

    __init__.__signature__ = preset  # type: ignore[attr-defined]
    return __init__


class _Stage(BaseEstimator, ABC):
    """Common base: scikit-learn parameter handling plus the interface version."""

    interface_version: ClassVar[int] = 1

    #: Whether ``fit`` may draw from the global random generators (Python's ``random``, NumPy's, torch's default),
    #: which the pipeline seeds with the run's ``seed`` before each stage. True, the safe default, puts the run seed
    #: into the stage's cache key. A plugin whose result follows from its inputs and parameters alone (deterministic,
    #: or seeded only from its own ``seed`` / ``random_state`` parameter) sets it False, so that runs with different
    #: seeds share its cached result; the conformance kit checks the claim (a refit under another global seed).
    uses_global_rng: ClassVar[bool] = True

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring: what ``anomaly-cluster list`` shows."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""


class Localizer(_Stage):
    """Images → one anomaly map and one image score per image.

    ``fit`` sees the unlabelled set itself (blind and zero-shot methods) and, when the user has them, defect-free
    reference images (``normal_images``). ``predict`` scores any images with what ``fit`` learned.
    """

    interface_version: ClassVar[int] = INTERFACE_VERSIONS["localizer"]

    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "Localizer":
        return self

    @abstractmethod
    def predict(self, images: ImageSet) -> AnomalyMaps: ...

    def fit_predict(self, images: ImageSet, normal_images: ImageSet | None = None) -> AnomalyMaps:
        """Fit, then score the same images (blind localizers may do both in one pass)."""
        return self.fit(images, normal_images).predict(images)


class Binarizer(_Stage):
    """Anomaly maps → binary masks and connected regions, with the threshold chosen per image or per set."""

    interface_version: ClassVar[int] = INTERFACE_VERSIONS["binarizer"]

    def fit(self, maps: AnomalyMaps, images: ImageSet) -> "Binarizer":
        return self

    @abstractmethod
    def transform(self, maps: AnomalyMaps, images: ImageSet) -> Regions: ...

    def fit_transform(self, maps: AnomalyMaps, images: ImageSet) -> Regions:
        return self.fit(maps, images).transform(maps, images)


class Representation(_Stage):
    """Images + maps + masks → embeddings, one per image or one per region. Learned ones ``fit`` first and then
    ``transform`` new images with what they learned."""

    interface_version: ClassVar[int] = INTERFACE_VERSIONS["representation"]

    #: False for methods that can only embed the set they were fitted on (``predict`` then refuses clearly).
    supports_new_images: ClassVar[bool] = True

    def fit(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> "Representation":
        return self

    @abstractmethod
    def transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings: ...

    def fit_transform(self, images: ImageSet, maps: AnomalyMaps, regions: Regions) -> Embeddings:
        return self.fit(images, maps, regions).transform(images, maps, regions)


class Clusterer(_Stage):
    """Embeddings → one label per image. ``n_clusters`` is a parameter of every clusterer; the pipeline sets it
    (given by the user, or estimated). ``predict`` assigns new embeddings where the method allows."""

    interface_version: ClassVar[int] = INTERFACE_VERSIONS["clusterer"]

    #: False for methods that cannot assign new points (``predict`` then raises NotImplementedError).
    supports_predict: ClassVar[bool] = True

    n_clusters: int

    @abstractmethod
    def fit_predict(self, embeddings: Embeddings) -> Clustering: ...

    def predict(self, embeddings: Embeddings) -> Clustering:
        raise NotImplementedError(f"{type(self).__name__} cannot assign new images to its clusters")


@dataclass(frozen=True)
class ClassifierPreset:
    """A named recipe of representation + clusterer (+ binarizer): what ``--classifier NAME`` selects.

    Each part is a plugin name or a mapping ``{"name": ..., option: value, ...}``; ``--representation``,
    ``--clusterer`` and ``--binarizer`` on the command line override the parts.
    """

    representation: str | Mapping[str, Any]
    clusterer: str | Mapping[str, Any] = "ward"
    binarizer: str | Mapping[str, Any] = "otsu"
    description: str = ""
    interface_version: int = INTERFACE_VERSIONS["classifier"]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return self.description

    def parts(self) -> dict[str, dict[str, Any]]:
        """The three parts as ``{"name": ..., **options}`` dictionaries."""
        out: dict[str, dict[str, Any]] = {}
        for kind in ("binarizer", "representation", "clusterer"):
            spec = getattr(self, kind)
            out[kind] = {"name": spec} if isinstance(spec, str) else dict(spec)
        return out


#: Interface class per plugin kind (classifier presets are instances, not classes).
STAGE_INTERFACES: dict[str, type] = {
    "localizer": Localizer,
    "binarizer": Binarizer,
    "representation": Representation,
    "clusterer": Clusterer,
}
