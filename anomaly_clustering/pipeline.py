"""The pipeline: localize → binarize → represent → cluster, each stage cached on disk, and the run folder.

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
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import registry, runtime
from .config import STAGES, PipelineConfig, StageSpec, merge_stage_options
from .interfaces import Binarizer, Clusterer, Localizer, Representation
from .kselect import cluster_distinct, method_label, select_n_clusters
from .records import AnomalyMaps, Clustering, Embeddings, ImageSet, Regions
from .store import StageCache, load_object, load_record, save_object, save_record, stable_hash

__all__ = ["StageSpec", "PipelineConfig", "FitResult", "Pipeline", "RunLock", "RunLockedError", "PipelineError", "STAGES"]


class PipelineError(ValueError):
    """A configuration or input problem found before or during a run; the message names the option or file."""


class RunLockedError(RuntimeError):
    """Another process is writing the same run folder."""


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@functools.lru_cache(maxsize=None)
def source_digest(module_name: str) -> str:
    """A hash of the Python sources beside a plugin's module (its folder, not recursive), so that editing a plugin's
    code (or its helpers next to it) invalidates its cached stage outputs even within one released version."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return "?"
    h = hashlib.sha256()
    for path in sorted(Path(file).parent.glob("*.py")):
        h.update(path.name.encode())
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

    def _key(self, stage: str, component: Any, *inputs: str) -> str:
        ident = _plugin_identity(stage, self.config.spec(stage).name)
        return stable_hash(stage, ident, component.get_params(deep=False), self.config.seed, *inputs)

    def _say(self, msg: str) -> None:
        self.log.append(msg)
        if not runtime.is_main():  # in a multi-process run rank 0 speaks for all
            return
        runtime.log.info(msg)
        if not self.quiet:
            print(msg, flush=True)

    @contextlib.contextmanager
    def _stage(self, stage: str, key: str, seconds: dict[str, float], hits: dict[str, bool]) -> Iterator[Path | None]:
        hit = self.cache.lookup(stage, key)
        if not runtime.broadcast(hit is not None):  # every process must take the same branch (collectives inside)
            hit = None
        elif hit is None:
            raise PipelineError(f"{self.cache.root}: rank {runtime.rank()} cannot see rank 0's cached {stage}; a multi-node "
                                "run needs --cache_dir on a file system every node shares")
        hits[stage] = hit is not None
        t0 = time.perf_counter()
        yield hit
        seconds[stage] = time.perf_counter() - t0
        self._compute_seconds[stage] = seconds[stage]
        if hit is not None and (hit / "seconds.txt").exists():
            self._compute_seconds[stage] = float((hit / "seconds.txt").read_text())
        name = self.config.spec(stage).name
        if hit is not None:
            self._say(f"[{stage}] {name}: reused cached result ({key[:12]})")
        else:
            self._say(f"[{stage}] {name}: computed in {seconds[stage]:.1f} s")

    # ---------------------------------------------------------------------------------------------------- fit
    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> FitResult:
        cfg = self.config
        n = len(images)
        if n < 2:
            raise PipelineError(f"--data {images.root}: {n} image; at least 2 are needed to cluster")
        if isinstance(cfg.n_clusters, int):
            if cfg.n_clusters < 1:
                raise PipelineError(f"--n_clusters {cfg.n_clusters}: must be at least 1")
            if cfg.n_clusters > len(set(images.digests)):  # copies of one picture share a cluster
                raise PipelineError(f"--n_clusters {cfg.n_clusters}: more clusters than distinct images ({len(set(images.digests))})")
        if len(set(images.digests)) == 1:
            raise PipelineError(f"--data {images.root}: all {n} images are identical; there is nothing to cluster")
        components: dict[str, Any] = {}
        keys: dict[str, str] = {}
        hits: dict[str, bool] = {}
        seconds: dict[str, float] = {}
        self._compute_seconds: dict[str, float] = {}
        with runtime.settings(device=self.device, quiet=self.quiet, cache_dir=str(self.cache.root)):
            # 1. localize
            loc: Localizer = self.build("localizer")
            keys["localizer"] = self._key("localizer", loc, images.fingerprint(), normal_images.fingerprint() if normal_images else "")
            with self._stage("localizer", keys["localizer"], seconds, hits) as hit:
                t_start = time.perf_counter()
                if hit is None:
                    _seed_everything(cfg.seed)
                    maps = loc.fit_predict(images, normal_images)
                    _check_maps(maps, n, cfg.localizer.name)
                    self._store("localizer", keys["localizer"], loc, maps, time.perf_counter() - t_start)
                else:
                    loc, maps = self._load("localizer", hit, AnomalyMaps)
            components["localizer"] = loc
            # 2. binarize
            binz: Binarizer = self.build("binarizer")
            keys["binarizer"] = self._key("binarizer", binz, keys["localizer"])
            with self._stage("binarizer", keys["binarizer"], seconds, hits) as hit:
                t_start = time.perf_counter()
                if hit is None:
                    _seed_everything(cfg.seed)
                    regions = binz.fit_transform(maps, images)
                    self._store("binarizer", keys["binarizer"], binz, regions, time.perf_counter() - t_start)
                else:
                    binz, regions = self._load("binarizer", hit, Regions)
            components["binarizer"] = binz
            # 3. represent
            rep: Representation = self.build("representation")
            keys["representation"] = self._key("representation", rep, keys["binarizer"])
            with self._stage("representation", keys["representation"], seconds, hits) as hit:
                t_start = time.perf_counter()
                if hit is None:
                    _seed_everything(cfg.seed)
                    emb = rep.fit_transform(images, maps, regions)
                    if emb.n_images != n:
                        raise PipelineError(f"representation {cfg.representation.name!r} returned embeddings for {emb.n_images} images, expected {n}")
                    self._store("representation", keys["representation"], rep, emb, time.perf_counter() - t_start)
                else:
                    rep, emb = self._load("representation", hit, Embeddings)
            components["representation"] = rep
            # 4. cluster (K given or estimated)
            clu: Clusterer = self.build("clusterer")
            keys["clusterer"] = self._key("clusterer", clu, keys["representation"], cfg.n_clusters, cfg.k_min, cfg.k_max, method_label(cfg.k_method))
            with self._stage("clusterer", keys["clusterer"], seconds, hits) as hit:
                t_start = time.perf_counter()
                if hit is None:
                    _seed_everything(cfg.seed)
                    clustering = cluster_distinct(images, emb, lambda e: self._cluster(clu, e))  # copies share a label
                    clu = clustering.info.pop("_fitted", clu)
                    self._store("clusterer", keys["clusterer"], clu, clustering, time.perf_counter() - t_start)
                else:
                    clu, clustering = self._load("clusterer", hit, Clustering)
            components["clusterer"] = clu
        return FitResult(images, maps, regions, emb, clustering, components, keys, hits, seconds, _peak_rss_mb(), dict(self._compute_seconds))

    def _cluster(self, clu: Clusterer, emb: Embeddings) -> Clustering:
        cfg = self.config
        if isinstance(cfg.n_clusters, int):
            clu.set_params(n_clusters=cfg.n_clusters)
            result = clu.fit_predict(emb)
            result.info["_fitted"] = clu
            return result
        if cfg.n_clusters != "auto":
            raise PipelineError(f"--n_clusters {cfg.n_clusters!r}: give a positive integer or 'auto'")
        k, curve, fitted, result = select_n_clusters(clu, emb, cfg.k_min, cfg.k_max, cfg.k_method, cfg.seed)
        self._say(f"[clusterer] estimated K = {k} by {method_label(cfg.k_method)} over K = {min(curve)}…{max(curve)}")
        result = dataclasses.replace(result, k_curve=curve, k_method=method_label(cfg.k_method))
        result.info["_fitted"] = fitted
        return result

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


def _check_maps(maps: AnomalyMaps, n: int, name: str) -> None:
    if len(maps) != n:
        raise PipelineError(f"localizer {name!r} returned {len(maps)} maps for {n} images")
    if not np.all(np.isfinite(np.asarray(maps.maps[: min(n, 64)]))):
        raise PipelineError(f"localizer {name!r} returned non-finite anomaly values")


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
