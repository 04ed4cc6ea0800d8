"""The Python API: cluster a folder of images by defect type in a notebook, the way ``anomaly-cluster fit`` does.

    from anomaly_clustering import AnomalyClustering, load_run

    model = AnomalyClustering(localizer="fca", classifier="average", n_clusters=3, seed=0)
    result = model.fit("data/bottle/test")            # a folder (searched recursively) or an ImageSet
    result.labels, result.scores, result.maps.shape   # one cluster and one anomaly score per image, N×H×W maps
    result.to_dataframe()                             # image, cluster, anomaly_score, threshold, n_regions
    result.save("runs/bottle")                        # the same run folder the CLI writes
    load_run("runs/bottle").predict("new_images").labels

Options follow the CLI's names: stage plugins by name (``binarizer="otsu"``) or as a mapping
(``representation={"name": "contrastive-head", "epochs": 2}``), one stage option as ``<stage>__<option>=value``
(``localizer__window=5``), and the shared settings ``backbone``, ``backbone_weights``, ``input_size``, ``seed``. They are
merged by :func:`anomaly_clustering.config.resolve_config`, the rule the CLI and the benchmark use too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .config import DEFAULT_CLASSIFIER, DEFAULT_STABILITY_RESAMPLES, STAGES, ConfigError, PipelineConfig, check_plugins, resolve_config
from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Regions

__all__ = ["AnomalyClustering", "ClusteringResult", "Prediction", "FittedRun", "load_run"]

ImagesLike = str | os.PathLike | ImageSet


def as_image_set(images: ImagesLike, include: Sequence[str] = (), exclude: Sequence[str] = (), strict: bool = False) -> ImageSet:
    """An :class:`ImageSet` as given, or the images of a folder (searched recursively)."""
    if isinstance(images, ImageSet):
        return images
    from .data import load_image_set

    return load_image_set(str(images), list(include), list(exclude), strict=strict)


@dataclass(frozen=True)
class Prediction:
    """Per-image outputs: a cluster label, an anomaly score, an anomaly map and a binary mask per image."""

    images: ImageSet
    anomaly_maps: AnomalyMaps
    regions: Regions
    clustering: Clustering
    embeddings: Embeddings | None = None

    @property
    def labels(self) -> np.ndarray:
        """One cluster index (0…K−1) per image, in image order."""
        return np.asarray(self.clustering.labels)

    @property
    def n_clusters(self) -> int:
        return int(self.clustering.n_clusters)

    @property
    def scores(self) -> np.ndarray:
        """One image-level anomaly score per image (higher = more anomalous)."""
        return np.asarray(self.anomaly_maps.scores)

    @property
    def maps(self) -> np.ndarray:
        """Anomaly maps, N×H×W at the localizer's working resolution."""
        return np.asarray(self.anomaly_maps.maps)

    @property
    def masks(self) -> np.ndarray:
        """Binary anomaly masks, N×H×W bool, at the maps' resolution."""
        return np.asarray(self.regions.masks, bool)

    @property
    def names(self) -> tuple[str, ...]:
        """Image paths relative to the image folder: the rows' identifiers."""
        return self.images.names

    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per image: image, path, cluster, anomaly_score, threshold, n_regions."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from None
        n_regions = np.bincount([r.image_index for r in self.regions.regions], minlength=len(self.images))
        return pd.DataFrame({
            "image": list(self.images.names), "path": self.images.paths, "cluster": self.labels, "anomaly_score": self.scores,
            "threshold": np.asarray(self.regions.thresholds), "n_regions": n_regions[: len(self.images)],
        })

    def save(self, out_dir: str | os.PathLike, save_pngs: bool = True) -> Path:
        """Write ``predictions.csv`` with maps and masks, as ``anomaly-cluster predict`` does."""
        from .runs import write_predictions

        return write_predictions(out_dir, self.images, self.anomaly_maps, self.regions, self.clustering, save_pngs)


@dataclass(frozen=True)
class FittedRun:
    """The four fitted stages of a run: assigns new images to its clusters without refitting."""

    components: Mapping[str, Any]
    cache_dir: str
    config: Mapping[str, Any]
    source: str = "this session"

    def check_can_predict(self) -> None:
        """Fail with a clear message when a stage of this run cannot handle new images."""
        if not getattr(self.components["clusterer"], "supports_predict", True):
            raise ConfigError(f"--run {self.source}: clusterer {self.config['clusterer']['name']!r} cannot assign new images")
        if not getattr(self.components["representation"], "supports_new_images", True):
            raise ConfigError(f"--run {self.source}: representation {self.config['representation']['name']!r} cannot embed new images; fit again with them included")

    def predict(self, images: ImagesLike, *, device: str = "auto", quiet: bool = True, include: Sequence[str] = (), exclude: Sequence[str] = (), strict: bool = False) -> Prediction:
        """Localize, binarize, embed and assign ``images`` (a folder or an ImageSet) with the fitted stages."""
        from . import runtime

        self.check_can_predict()
        image_set = as_image_set(images, include, exclude, strict)
        comps = self.components
        with runtime.settings(device=device, quiet=quiet, cache_dir=self.cache_dir):
            maps = comps["localizer"].predict(image_set)
            regions = comps["binarizer"].transform(maps, image_set)
            emb = comps["representation"].transform(image_set, maps, regions)
            clustering = comps["clusterer"].predict(emb)
        return Prediction(image_set, maps, regions, clustering, emb)


def load_run(run_dir: str | os.PathLike) -> FittedRun:
    """A finished run folder (written by ``anomaly-cluster fit`` or :meth:`ClusteringResult.save`), ready to predict."""
    from .runs import RunFolder

    run = RunFolder.open(run_dir)
    conf = run.config
    return FittedRun({k: run.component(k) for k in STAGES}, conf.get("cache_dir") or str(run.path / "cache"), conf, str(run_dir))


@dataclass(frozen=True)
class ClusteringResult(Prediction):
    """What :meth:`AnomalyClustering.fit` returns: the per-image outputs, the embeddings, the fitted stages
    (``predict`` assigns new images) and how the run went (``seconds``, ``log``)."""

    embeddings: Embeddings | None = None
    config: Mapping[str, Any] | None = None
    fit_result: Any = None  # pipeline.FitResult: everything the run folder is written from
    log: tuple[str, ...] = ()

    @property
    def model(self) -> FittedRun:
        return FittedRun(self.fit_result.components, str(self.config.get("cache_dir")), self.config)

    @property
    def seconds(self) -> dict[str, float]:
        """Wall seconds per stage (a reused cached stage counts its load time)."""
        return dict(self.fit_result.seconds)

    @property
    def stability(self) -> Any:
        """How far refits on random subsets agree with these clusters (a :class:`~anomaly_clustering.stability.ClusterStability`;
        None when ``stability_resamples=0``)."""
        return self.fit_result.stability

    def predict(self, images: ImagesLike, **kwargs: Any) -> Prediction:
        """Assign new images to these clusters (see :meth:`FittedRun.predict`)."""
        return self.model.predict(images, **kwargs)

    def save(self, run_dir: str | os.PathLike, save_pngs: bool = True) -> Path:  # type: ignore[override]
        """Write the run folder (``clusters.csv``, maps, masks, records, fitted model, ``config.yaml``) that the CLI's
        ``evaluate``, ``report`` and ``predict`` read."""
        from .runs import write_run

        return write_run(run_dir, self.fit_result, dict(self.config), list(self.log), save_pngs=save_pngs)


class AnomalyClustering:
    """Localize anomalies, binarize them, embed each image and cluster the images by defect type.

    ``localizer``: a localizer plugin name (default ``fca-vae-frame``); ``classifier``: a preset of binarizer +
    representation + clusterer (default ``multiview-all-normal-first``); ``n_clusters``: an integer or ``"auto"`` (estimated
    between ``k_min`` and ``k_max`` by ``k_method``). Stage choices, stage options (``<stage>__<option>=value``) and
    the shared settings are merged by :func:`~anomaly_clustering.config.resolve_config`, exactly as on the command
    line. ``device``, ``cache_dir`` (the stage cache; default ``$ANOMALY_CLUSTERING_CACHE/pipeline``) and ``quiet``
    are execution settings: they never change the result. Parameters are checked at the start of :meth:`fit`.
    """

    def __init__(
        self,
        localizer: str | Mapping[str, Any] | None = None,
        classifier: str | None = None,
        n_clusters: int | str = "auto",
        *,
        binarizer: str | Mapping[str, Any] | None = None,
        representation: str | Mapping[str, Any] | None = None,
        clusterer: str | Mapping[str, Any] | None = None,
        k_min: int = 2,
        k_max: int = 10,
        k_method: str = "auto",
        stability_resamples: int = DEFAULT_STABILITY_RESAMPLES,
        backbone: str | None = None,
        backbone_weights: str | None = None,
        input_size: int | None = None,
        seed: int | None = None,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        quiet: bool = True,
        **options: Any,
    ) -> None:
        self.localizer, self.classifier, self.n_clusters = localizer, classifier, n_clusters
        self.binarizer, self.representation, self.clusterer = binarizer, representation, clusterer
        self.k_min, self.k_max, self.k_method = k_min, k_max, k_method
        self.stability_resamples = stability_resamples
        self.backbone, self.backbone_weights, self.input_size, self.seed = backbone, backbone_weights, input_size, seed
        self.device, self.cache_dir, self.quiet = device, cache_dir, quiet
        self.options = options

    def _stage_choices(self) -> dict[str, dict[str, Any]]:
        stages: dict[str, dict[str, Any]] = {}
        for stage in STAGES:
            value = getattr(self, stage)
            stages[stage] = {} if value is None else ({"name": value} if isinstance(value, str) else dict(value))
        for key, value in self.options.items():
            stage, sep, option = key.partition("__")
            if not sep or stage not in STAGES or not option:
                raise ConfigError(f"{key}={value!r}: unknown option; stage options are written <stage>__<option> with stage one of {', '.join(STAGES)}")
            stages[stage][option] = value
        return stages

    def resolve(self) -> PipelineConfig:
        """The pipeline configuration these parameters give; every plugin is built once, so a bad name or option
        fails here, before any work."""
        from .kselect import K_METHODS

        if self.k_method not in K_METHODS:
            raise ConfigError(f"k_method={self.k_method!r}: choose one of {', '.join(K_METHODS)}")
        if not 2 <= self.k_min <= self.k_max:
            raise ConfigError(f"k_min={self.k_min}, k_max={self.k_max}: need 2 <= k_min <= k_max")
        if not isinstance(self.stability_resamples, int) or isinstance(self.stability_resamples, bool) or self.stability_resamples < 0:
            raise ConfigError(f"stability_resamples={self.stability_resamples!r}: give an integer >= 0 (0: no stability refits)")
        config = resolve_config(
            self.classifier, **{k: v or None for k, v in self._stage_choices().items()}, n_clusters=self.n_clusters,
            k_min=self.k_min, k_max=self.k_max, k_method=self.k_method, stability_resamples=self.stability_resamples,
            backbone=self.backbone, backbone_weights=self.backbone_weights, input_size=self.input_size, seed=self.seed,
        )
        if isinstance(config.n_clusters, int) and config.n_clusters < 1:
            raise ConfigError(f"n_clusters={config.n_clusters}: must be at least 1")
        check_plugins(config)
        return config

    def _cache_dir(self) -> Path:
        from . import runtime

        return Path(self.cache_dir) if self.cache_dir is not None else runtime.cache_dir() / "pipeline"

    def fit(self, images: ImagesLike, normal_images: ImagesLike | None = None) -> ClusteringResult:
        """Run the four stages on ``images`` (a folder or an ImageSet; ``normal_images`` optional defect-free
        references) and return the result; cached stages are reused."""
        from .pipeline import Pipeline

        config = self.resolve()
        image_set = as_image_set(images)
        normal = as_image_set(normal_images) if normal_images is not None else None
        cache = self._cache_dir()
        pipe = Pipeline(config, cache, device=self.device, quiet=self.quiet)
        fit = pipe.fit(image_set, normal)
        resolved = _run_config(self, config, pipe, image_set, cache)
        return ClusteringResult(image_set, fit.maps, fit.regions, fit.clustering, fit.embeddings, resolved, fit, tuple(pipe.log))


def _run_config(model: AnomalyClustering, config: PipelineConfig, pipe: Any, images: ImageSet, cache: Path) -> dict[str, Any]:
    """The ``config.yaml`` of a run fitted from Python: the same keys the CLI writes."""
    out: dict[str, Any] = {"data": images.root, "classifier": model.classifier or DEFAULT_CLASSIFIER, "n_clusters": config.n_clusters,
                           "k_min": config.k_min, "k_max": config.k_max, "k_method": config.k_method, "stability_resamples": config.stability_resamples, "seed": model.seed,
                           "backbone": model.backbone, "backbone_weights": model.backbone_weights, "input_size": model.input_size,
                           "device": model.device, "cache_dir": str(cache)}
    for stage in STAGES:
        out[stage] = {"name": config.spec(stage).name, **pipe.stage_options(stage)}
    return out
