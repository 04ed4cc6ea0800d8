"""The on-disk feature cache: :func:`extract_features` computes a set's feature maps once (batched, sharded,
resumable after a crash) and stores them as float16 keyed by backbone, layers, input size, weights and image
contents, so every later stage and every rerun reads them. One writer per key at a time (a file lock), so two
processes asking for the same features at once compute them once and never write the same files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .. import runtime
from ..data import load_resized
from ..records import ImageSet
from ..store import NpyRows, ShardedArrayWriter, StageCache, StoreError, stable_hash
from .catalog import DEFAULT_BACKBONE, _info
from .extractor import FeatureBackbone, create_backbone
from .weights import resolve_weights


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute: backbone name, layers (empty = the backbone's default), square input side in
    pixels, and an optional weights file/folder."""

    backbone: str = DEFAULT_BACKBONE
    layers: tuple[str, ...] = ()
    input_size: int = 512
    weights: str | None = None

    def resolved_layers(self) -> tuple[str, ...]:
        return tuple(str(x) for x in (self.layers or _info(self.backbone).default_layers))

    def cache_key(self, images: ImageSet) -> str:
        path = resolve_weights(self.backbone, self.weights)
        wid = _file_identity(path) if path else "download"
        return stable_hash("features", self.backbone, self.resolved_layers(), self.input_size, wid, images.fingerprint())


def _file_identity(path: str) -> str:
    st = os.stat(path)
    h = hashlib.sha1(f"{st.st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


@dataclass
class FeatureArray:
    """A set's feature maps (N×C×h×w, float16, on disk; rows read on demand): index it for one image as a float32
    tensor."""

    data: Any  # NpyRows (or any array-like indexable by rows)
    spec: FeatureSpec
    stride: int
    path: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.data[i], dtype=np.float32))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.array(self.data[np.asarray(indices)], dtype=np.float32))


_BACKBONE_MEMO: dict[tuple, FeatureBackbone] = {}


def get_backbone(spec: FeatureSpec) -> FeatureBackbone:
    """A memoised backbone for ``spec`` (built once per process)."""
    key = (spec.backbone, spec.resolved_layers(), resolve_weights(spec.backbone, spec.weights))
    if key not in _BACKBONE_MEMO:
        _BACKBONE_MEMO[key] = create_backbone(spec.backbone, spec.resolved_layers(), spec.weights)
    return _BACKBONE_MEMO[key]


def load_batch(images: ImageSet, indices: Sequence[int], size: int) -> torch.Tensor:
    """Images ``indices`` resized to size×size, as a B×3×H×W float tensor in [0, 1]."""
    arr = np.stack([load_resized(images.paths[i], size) for i in indices])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


SHARDS_FILE = "shards.json"


def _write_shard_sums(folder: Path, shape: tuple[int, ...], shard_size: int) -> None:
    """Record each shard's checksum beside a sealed feature array, so a read can verify (and redo) shard by shard."""
    rows = NpyRows(folder / "data.npy")
    try:
        sums = {str(s): _rows_sha(rows, s, shard_size) for s in range(-(-shape[0] // shard_size))}
    finally:
        rows.close()
    layout = {"shape": list(shape), "dtype": np.dtype(np.float16).str, "shard": shard_size}
    (folder / SHARDS_FILE).write_text(json.dumps({"layout": layout, "done": sums}))


def _rows_sha(rows: NpyRows, shard: int, shard_size: int) -> str:
    block = rows[shard * shard_size : min(len(rows), (shard + 1) * shard_size)]
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()[:16]


def _verified_features(cache: StageCache, key: str, shard_size: int) -> Path | None:
    """The cached feature entry if every shard still matches its checksum (the whole array is read once, so a
    bit flip, a zeroed block or a garbage header is caught whatever the file's size). When only some shards fail,
    the entry goes back to a resumable ``.partial`` folder holding the good ones, so just the bad shards are
    recomputed; when the header or the bookkeeping is damaged, the entry is removed and everything recomputed."""
    hit = cache.lookup("features", key, verify=False)
    if hit is None:
        return None
    sums_file = hit / SHARDS_FILE
    if not sums_file.exists():  # an entry written before shard checksums: verify its files as a whole
        return cache.lookup("features", key, verify=True)
    try:
        state = json.loads(sums_file.read_text())
        layout = state["layout"]
        int((hit / "stride.txt").read_text())
        rows = NpyRows(hit / "data.npy")
        try:
            if list(rows.shape) != layout["shape"] or rows.dtype.str != layout["dtype"] or os.path.getsize(rows.path) != rows.offset + rows.row_bytes * rows.shape[0]:
                raise StoreError("layout")
            bad = [s for s, sha in state["done"].items() if _rows_sha(rows, int(s), int(layout["shard"])) != sha]
        finally:
            rows.close()
    except (OSError, ValueError, KeyError, TypeError, StoreError):
        shutil.rmtree(hit, ignore_errors=True)
        warnings.warn(f"feature cache {hit} was damaged; recomputing it", stacklevel=3)
        return None
    if not bad:
        return hit
    warnings.warn(f"feature cache {hit}: {len(bad)} damaged shard(s) of {len(state['done'])}; recomputing them", stacklevel=3)
    work = cache.path("features", key + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.replace(hit / "data.npy", work / "data.npy")
    good = {s: sha for s, sha in state["done"].items() if s not in bad}
    (work / "progress.json").write_text(json.dumps({"layout": layout, "done": good}))
    shutil.rmtree(hit, ignore_errors=True)
    return None


def extract_features(images: ImageSet, spec: FeatureSpec, batch_size: int = 8, shard_size: int = 64) -> FeatureArray:
    """Feature maps of every image, computed once (batched, on the run's device) and cached on disk as float16.
    Resumes at the last completed shard after a crash; later calls with the same spec and images read the cache.
    In a multi-process run the shards are dealt out to the processes, which fill one shared memory-mapped file.
    Independent processes asking for the same features at once take turns (:func:`_writer_lock`): the first
    computes them, the others then read its entry."""
    cache = StageCache(runtime.cache_dir())
    key = spec.cache_key(images)
    with _writer_lock(cache, key):
        hit = _cached_features(cache, key, shard_size)
        if hit is None:
            _compute_features(images, spec, cache, key, batch_size, shard_size)
            hit = cache.path("features", key)
    return FeatureArray(NpyRows(hit / "data.npy"), spec, int((hit / "stride.txt").read_text()), str(hit))


@contextlib.contextmanager
def _writer_lock(cache: StageCache, key: str) -> Iterator[None]:
    """Hold ``features/<key>.lock`` (an exclusive ``flock``, released by the OS if the process dies) while checking
    the cache and filling the resumable ``<key>.partial`` folder, so that two processes never write the same
    files. Only rank 0 of a multi-process run takes it; the other ranks follow rank 0 through its barriers."""
    if not runtime.is_main():
        yield
        return
    import fcntl

    path = cache.path("features", key + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            runtime.log.info("features %s: another process is computing them; waiting for it", key[:12])
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _cached_features(cache: StageCache, key: str, shard_size: int) -> Path | None:
    """The verified cache entry (rank 0 checks it; every process learns the answer and must see the entry)."""
    hit = _verified_features(cache, key, shard_size) if runtime.is_main() else None
    if not runtime.broadcast(hit is not None):
        return None
    hit = hit or cache.lookup("features", key, verify=False)
    if hit is None:
        raise StoreError(f"{cache.root}: the feature cache of rank 0 is not visible to rank {runtime.rank()}; "
                         "a multi-node run needs --cache_dir on a file system every node shares")
    return hit


def _compute_features(images: ImageSet, spec: FeatureSpec, cache: StageCache, key: str, batch_size: int, shard_size: int) -> None:
    """Fill ``<key>.partial`` shard by shard (each process its share), then seal it as the cache entry ``key``."""
    device = runtime.device()
    backbone = get_backbone(spec).to(device)
    with torch.no_grad():
        probe = backbone(torch.zeros(1, 3, spec.input_size, spec.input_size, device=device))
    shape = (len(images), *probe.shape[1:])
    work = cache.path("features", key + ".partial")
    if runtime.is_main():
        writer = ShardedArrayWriter(work, shape, np.float16, shard_size)
    runtime.barrier()
    if not runtime.is_main():
        writer = ShardedArrayWriter(work, shape, np.float16, shard_size, create=False, rank=runtime.rank())
    _fill_shards(writer, images, spec, backbone, batch_size, device)
    runtime.barrier()
    if runtime.is_main():
        _seal_features(cache, key, work, shape, shard_size, backbone.stride)
    runtime.barrier()


def _fill_shards(writer: ShardedArrayWriter, images: ImageSet, spec: FeatureSpec, backbone: FeatureBackbone, batch_size: int, device: torch.device) -> None:
    """Compute this process's share of the pending shards, batch by batch, with a progress bar over images."""
    pending = writer.pending()[runtime.rank() :: runtime.world_size()]
    bar = runtime.progress(range(sum(len(writer.shard_rows(s)) for s in pending)), desc=f"features {spec.backbone}", unit="img")
    it = iter(bar)
    for shard in pending:
        rows = list(writer.shard_rows(shard))
        out = np.empty((len(rows), *writer.shape[1:]), np.float16)
        for b in range(0, len(rows), batch_size):
            idx = rows[b : b + batch_size]
            x = load_batch(images, idx, spec.input_size).to(device)
            with torch.no_grad():
                out[b : b + len(idx)] = backbone(x).float().cpu().numpy().astype(np.float16)
            for _ in idx:
                next(it, None)
        writer.write(shard, out)
    writer.close()
    if hasattr(bar, "close"):
        bar.close()


def _seal_features(cache: StageCache, key: str, work: Path, shape: tuple[int, ...], shard_size: int, stride: int) -> None:
    """Move the filled array from ``work`` into the cache entry ``key`` with its stride and shard checksums."""
    if runtime.world_size() > 1:  # every process's shards must be there (and intact) before sealing the entry
        check = ShardedArrayWriter(work, shape, np.float16, shard_size, create=False)
        if check.pending():
            raise StoreError(f"{work}: shards {check.pending()} are missing after the multi-process feature pass")
        check.close()
    with cache.entry("features", key) as tmp:
        os.replace(work / "data.npy", tmp / "data.npy")
        (tmp / "stride.txt").write_text(str(stride))
        _write_shard_sums(tmp, shape, shard_size)
    shutil.rmtree(work, ignore_errors=True)
