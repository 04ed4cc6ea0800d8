"""The pipeline: localize → binarize → represent → cluster, each stage cached on disk, and the run folder.
After the clusterer, the clusters' stability under refits on random subsets (:mod:`.stability`), cached the same way.

A stage's cache key is a hash of its plugin (name, class, version, parameters) and the keys of its inputs, so a
rerun recomputes only what changed and a crashed run resumes at the first stage that did not finish. Every stage
meets its plugin only through the registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import os
import random
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import registry, runtime
from .config import STAGES, PipelineConfig, StageSpec, merge_stage_options
from .interfaces import Clusterer
from .kselect import cluster_distinct, method_label, select_n_clusters
from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Regions
from .stability import SUBSET_FRACTION, ClusterStability, cluster_stability
from .store import StageCache, load_object, load_record, save_object, save_record, stable_hash

__all__ = ["StageSpec", "PipelineConfig", "FitResult", "Pipeline", "RunLock", "RunLockedError", "PipelineError", "STAGES"]


class PipelineError(ValueError):
    """A configuration or input problem found before or during a run; the message names the option or file."""


class RunLockedError(RuntimeError):
    """Another process is writing the same run folder."""


@dataclass
class _FitState:
    """What :meth:`Pipeline.fit` gathers stage by stage: fitted components, cache keys and hits, timings."""

    components: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    hits: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    compute_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    images: ImageSet
    maps: AnomalyMaps
    regions: Regions
    embeddings: Embeddings
    clustering: Clustering
    components: dict[str, Any]
    keys: dict[str, str]
    cache_hits: dict[str, bool]
    seconds: dict[str, float]
    peak_rss_mb: float
    compute_seconds: dict[str, float] = field(default_factory=dict)
    stability: ClusterStability | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def uses_global_rng(component: Any) -> bool:
    """Whether ``component``'s result may depend on the global random generators the pipeline seeds with the run
    seed before each stage: its ``uses_global_rng`` attribute (see :class:`interfaces.Localizer`), True for a
    component that does not declare it."""
    return bool(getattr(component, "uses_global_rng", True))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# a sibling folder of the plugin's package that its sources import: ``from ..common import x``,
# ``from anomaly_clustering.plugins.blind_lca.descriptor import y`` (the built-ins' alias), ``import plugins.z``
_SIBLING_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:\.\.|(?:anomaly_clustering\.)?plugins\.)(\w+)", re.M)


def _source_folders(folder: Path) -> list[Path]:
    """``folder`` and, transitively, the sibling folders its Python sources import from."""
    seen, todo = [], [folder]
    while todo:
        current = todo.pop()
        if current in seen or not current.is_dir():
            continue
        seen.append(current)
        for path in sorted(current.glob("*.py")):
            todo += [folder.parent / name for name in _SIBLING_IMPORT.findall(path.read_text(errors="replace"))]
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def source_digest(module_name: str) -> str:
    """A hash of the Python sources beside a plugin's module (its folder, not recursive) and of the sibling folders
    they import from (``plugins/multiview`` reads ``plugins/blind_lca``'s descriptor), so that editing a plugin's code
    or a helper it uses invalidates its cached stage outputs even within one released version."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return "?"
    h = hashlib.sha256()
    own = Path(file).parent
    for folder in _source_folders(own):
        for path in sorted(folder.glob("*.py")):
            h.update((path.name if folder == own else f"{folder.name}/{path.name}").encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _plugin_identity(kind: str, name: str) -> dict[str, Any]:
    info = registry.discover()[kind].get(name)
    cls = registry.get_plugin(kind, name)
    return {
        "name": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "dist": info.distribution if info else "?",
        "version": info.version if info else "?",
        "source": source_digest(cls.__module__),
    }


def stage_identity(kind: str, name: str, component: Any) -> dict[str, Any]:
    """The plugin's identity for a stage key, with those of the plugins it builds by name (``composed_plugins``,
    e.g. ``combined``'s members), whose code no import of its own names."""
    ident = _plugin_identity(kind, name)
    composed = getattr(component, "composed_plugins", None)
    if callable(composed):
        ident["composed"] = [_plugin_identity(k, n) for k, n in composed()]
    return ident


class Pipeline:
    """Runs the four stages with caching. ``cache_dir`` holds the stage cache (default: ``<run>/cache``)."""

    def __init__(self, config: PipelineConfig, cache_dir: str | os.PathLike, device: str = "auto", quiet: bool = False):
        self.config = config
        self.cache = StageCache(Path(cache_dir))
        self.device = device
        self.quiet = quiet
        self.log: list[str] = []

    # --------------------------------------------------------------------------------------------- components
    def stage_options(self, stage: str) -> dict[str, Any]:
        """The stage's options with the shared top-level settings filled in (:func:`config.merge_stage_options`)."""
        spec = self.config.spec(stage)
        return merge_stage_options(stage, spec.name, spec.options, self.config.shared, self.config.n_clusters)

    def build(self, stage: str) -> Any:
        return registry.create(stage, self.config.spec(stage).name, **self.stage_options(stage))

    def _key(self, stage: str, component: Any, *inputs: Any) -> str:
        """The stage's cache key: plugin identity, parameters, ``inputs`` and — only for a component that may draw
        from the global random generators (:func:`uses_global_rng`) — the run seed, so that a stage whose result
        does not depend on the seed is shared by runs with different seeds."""
        ident = stage_identity(stage, self.config.spec(stage).name, component)
        seed = self.config.seed if uses_global_rng(component) else None
        return stable_hash(stage, ident, component.get_params(deep=False), seed, *inputs)

    def _say(self, msg: str) -> None:
        self.log.append(msg)
        if not runtime.is_main():  # in a multi-process run rank 0 speaks for all
            return
        runtime.log.info(msg)
        if not self.quiet:
            print(msg, flush=True)

    @contextlib.contextmanager
    def _stage(self, stage: str, key: str, run: "_FitState") -> Iterator[Path | None]:
        """Look ``key`` up (every process alike), time the body, record the hit and the seconds in ``run``."""
        hit = self.cache.lookup(stage, key)
        if not runtime.broadcast(hit is not None):  # every process must take the same branch (collectives inside)
            hit = None
        elif hit is None:
            raise PipelineError(f"{self.cache.root}: rank {runtime.rank()} cannot see rank 0's cached {stage}; a multi-node "
                                "run needs --cache_dir on a file system every node shares")
        run.hits[stage] = hit is not None
        t0 = time.perf_counter()
        yield hit
        run.seconds[stage] = time.perf_counter() - t0
        run.compute_seconds[stage] = run.seconds[stage]
        if hit is not None and (hit / "seconds.txt").exists():
            run.compute_seconds[stage] = float((hit / "seconds.txt").read_text())
        name = self.config.spec(stage).name
        if hit is not None:
            self._say(f"[{stage}] {name}: reused cached result ({key[:12]})")
        else:
            self._say(f"[{stage}] {name}: computed in {run.seconds[stage]:.1f} s")

    # ---------------------------------------------------------------------------------------------------- fit
    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> FitResult:
        """Run the four stages on ``images`` (``normal_images``: defect-free references for the localizer), each
        reused from the stage cache when its key is there."""
        cfg = self.config
        self._check_images(images)
        run = _FitState()
        n, name = len(images), cfg.localizer.name
        with runtime.settings(device=self.device, quiet=self.quiet, cache_dir=str(self.cache.root)):
            maps = self._run_stage(run, "localizer", AnomalyMaps, lambda loc: (loc, _checked_maps(loc.fit_predict(images, normal_images), n, name)),
                                   images.fingerprint(), normal_images.fingerprint() if normal_images else "")
            regions = self._run_stage(run, "binarizer", Regions, lambda binz: (binz, binz.fit_transform(maps, images)), run.keys["localizer"])
            emb = self._run_stage(run, "representation", Embeddings, lambda rep: (rep, self._checked_embeddings(rep.fit_transform(images, maps, regions), n)),
                                  run.keys["binarizer"])
            clustering = self._run_stage(run, "clusterer", Clustering, lambda clu: self._fit_clusterer(clu, images, emb),
                                         run.keys["representation"], cfg.n_clusters, cfg.k_min, cfg.k_max, method_label(cfg.k_method),
                                         cfg.seed if cfg.n_clusters == "auto" else None)  # seeded K estimators
            stability = self._stability(run, emb, clustering) if cfg.stability_resamples else None
        return FitResult(images, maps, regions, emb, clustering, run.components, run.keys, run.hits, run.seconds, _peak_rss_mb(),
                         dict(run.compute_seconds), stability)

    def _stability(self, run: "_FitState", emb: Embeddings, clustering: Clustering) -> ClusterStability:
        """The clusters' stability (:func:`stability.cluster_stability`), reused from the cache when the clusterer's
        key and the resampling settings are the same; ``info`` says how long it took and whether it was cached."""
        cfg = self.config
        key = stable_hash("stability", run.keys["clusterer"], cfg.stability_resamples, SUBSET_FRACTION, cfg.seed)
        hit = self.cache.lookup("stability", key)
        if not runtime.broadcast(hit is not None):
            hit = None
        t0 = time.perf_counter()
        if hit is not None:
            result = load_record(hit / "record", ClusterStability)
        else:
            try:
                result = cluster_stability(run.components["clusterer"], emb, clustering, cfg.stability_resamples, SUBSET_FRACTION, cfg.seed)
            except Exception as exc:  # a diagnostic after the result: its failure must not lose the run
                self._say(f"[stability] not measured: {type(exc).__name__}: {exc}")
                k = int(clustering.n_clusters)
                return ClusterStability(float("nan"), float("nan"), np.full(k, np.nan), 0, SUBSET_FRACTION, {"skipped": f"{type(exc).__name__}: {exc}"})
            if runtime.is_main():
                with self.cache.entry("stability", key) as tmp:
                    save_record(tmp / "record", result)
            runtime.barrier()
        weak = int(np.sum(np.asarray(result.cluster_scores) < 0.6))
        how = f"reused cached result ({key[:12]})" if hit is not None else f"{cfg.stability_resamples} refits on {SUBSET_FRACTION:.0%} of the images"
        self._say(f"[stability] {how}: NMI with the run {result.score:.3f} ± {result.score_std:.3f}; "
                  f"{weak} of {len(result.cluster_scores)} clusters below Jaccard 0.6")
        return dataclasses.replace(result, info={**result.info, "seconds": round(time.perf_counter() - t0, 3), "reused_from_cache": hit is not None, "key": key})

    def _check_images(self, images: ImageSet) -> None:
        """Refuse a set that cannot be clustered into the K asked, before any work."""
        n, distinct, k = len(images), len(set(images.digests)), self.config.n_clusters
        if n < 2:
            raise PipelineError(f"--data {images.root}: {n} image; at least 2 are needed to cluster")
        if isinstance(k, int):
            if k < 1:
                raise PipelineError(f"--n_clusters {k}: must be at least 1")
            if k > distinct:  # copies of one picture share a cluster
                raise PipelineError(f"--n_clusters {k}: more clusters than distinct images ({distinct})")
        if distinct == 1:
            raise PipelineError(f"--data {images.root}: all {n} images are identical; there is nothing to cluster")

    def _run_stage(self, run: "_FitState", stage: str, record_type: type, compute: Callable[[Any], tuple[Any, Any]], *inputs: Any) -> Any:
        """One stage: build its component, key it by its identity, parameters and ``inputs`` (the previous stage's
        key, or the images), then reuse the cached (component, record) or compute them with ``compute(component)``
        under the run seed and store them. Returns the record; the component and bookkeeping go into ``run``."""
        component = self.build(stage)
        key = run.keys[stage] = self._key(stage, component, *inputs)
        with self._stage(stage, key, run) as hit:
            t_start = time.perf_counter()
            if hit is None:
                _seed_everything(self.config.seed)
                component, record = compute(component)
                self._store(stage, key, component, record, time.perf_counter() - t_start)
            else:
                component, record = self._load(stage, hit, record_type)
        run.components[stage] = component
        return record

    def _checked_embeddings(self, emb: Embeddings, n: int) -> Embeddings:
        if emb.n_images != n:
            raise PipelineError(f"representation {self.config.representation.name!r} returned embeddings for {emb.n_images} images, expected {n}")
        return emb

    def _fit_clusterer(self, clu: Clusterer, images: ImageSet, emb: Embeddings) -> tuple[Clusterer, Clustering]:
        """The fitted clusterer (a clone of ``clu`` when K was estimated) and its clustering; pixel-identical images
        are clustered once and share a label (:func:`kselect.cluster_distinct`)."""
        fitted: list[Clusterer] = [clu]

        def cluster(e: Embeddings) -> Clustering:
            fitted[0], result = self._cluster(clu, e)
            return result

        clustering = cluster_distinct(images, emb, cluster)
        return fitted[0], clustering

    def _cluster(self, clu: Clusterer, emb: Embeddings) -> tuple[Clusterer, Clustering]:
        cfg = self.config
        if isinstance(cfg.n_clusters, int):
            clu.set_params(n_clusters=cfg.n_clusters)
            return clu, clu.fit_predict(emb)
        if cfg.n_clusters != "auto":
            raise PipelineError(f"--n_clusters {cfg.n_clusters!r}: give a positive integer or 'auto'")
        k, curve, fitted, result = select_n_clusters(clu, emb, cfg.k_min, cfg.k_max, cfg.k_method, cfg.seed)
        self._say(f"[clusterer] estimated K = {k} by {method_label(cfg.k_method)} over K = {min(curve)}…{max(curve)}")
        return fitted, dataclasses.replace(result, k_curve=curve, k_method=method_label(cfg.k_method))

    def _store(self, stage: str, key: str, component: Any, record: Any, seconds: float | None = None) -> None:
        if runtime.is_main():  # every process holds the same result; one writes it
            with self.cache.entry(stage, key) as tmp:
                save_record(tmp / "record", record)
                save_object(tmp / "component.pkl", component)
                if seconds is not None:
                    (tmp / "seconds.txt").write_text(f"{seconds:.3f}")
        runtime.barrier()

    def _load(self, stage: str, folder: Path, cls: type) -> tuple[Any, Any]:
        return load_object(folder / "component.pkl"), load_record(folder / "record", cls)


def _checked_maps(maps: AnomalyMaps, n: int, name: str) -> AnomalyMaps:
    """``maps`` when it holds ``n`` finite maps, else a PipelineError naming the localizer."""
    if len(maps) != n:
        raise PipelineError(f"localizer {name!r} returned {len(maps)} maps for {n} images")
    if not np.all(np.isfinite(np.asarray(maps.maps[: min(n, 64)]))):
        raise PipelineError(f"localizer {name!r} returned non-finite anomaly values")
    return maps


class RunLock:
    """An exclusive lock on a run folder (``.lock``), so two runs cannot write the same folder at once."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise RunLockedError(f"--run {self.path.parent}: another anomaly-cluster process is using this run folder") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
