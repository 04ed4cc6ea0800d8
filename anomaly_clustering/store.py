"""On-disk storage: stable hashes for cache keys, atomic writes, records as .npy + JSON, resumable array files.

Arrays are written as ``.npy`` and read back memory-mapped, so a record never has to sit in memory whole. Every
write goes to a temporary name first and is renamed into place, so a crash leaves either the old state or the new
one, never a half-written file. Each completed directory carries a ``_COMPLETE`` marker holding checksums.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import typing
import uuid
from pathlib import Path
from typing import Any, Iterator, TypeVar

import numpy as np

from . import records

__all__ = [
    "stable_hash",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_record",
    "load_record",
    "save_object",
    "load_object",
    "StageCache",
    "NpyRows",
    "ShardedArrayWriter",
    "StoreError",
]

R = TypeVar("R")
COMPLETE = "_COMPLETE"


class StoreError(RuntimeError):
    """A stored file is missing, corrupt or cannot be written (the message names it)."""


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__dataclass__": type(obj).__name__, **{f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest(), "shape": list(obj.shape)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def stable_hash(*parts: Any, length: int = 24) -> str:
    """A hash of JSON-like values that is the same across runs and machines (dict order ignored)."""
    payload = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it is renamed to ``final`` (replacing an old one when
    ``replace``); on any error it is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            if not replace:
                raise StoreError(f"{final} already exists")
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_json(value: Any) -> Any:
    if isinstance(value, records.Region):
        return {"image_index": value.image_index, "box": list(value.box), "area": value.area, "score": value.score}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def save_record(folder: str | os.PathLike, record: Any) -> None:
    """Write a record dataclass into ``folder``: each array field as ``<name>.npy``, the rest as ``meta.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"__record__": type(record).__name__}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, np.ndarray):
            np.save(folder / f"{f.name}.npy", np.ascontiguousarray(value), allow_pickle=False)
            meta[f.name] = {"__npy__": f"{f.name}.npy"}
        else:
            meta[f.name] = _to_json(value)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def load_record(folder: str | os.PathLike, cls: type[R], mmap: bool = True) -> R:
    """Read a record written by :func:`save_record` (arrays memory-mapped unless ``mmap=False``)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{folder}: unreadable record ({exc})") from None
    if meta.get("__record__") != cls.__name__:
        raise StoreError(f"{folder}: holds a {meta.get('__record__')}, expected {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in meta:
            continue
        value = meta[f.name]
        if isinstance(value, dict) and "__npy__" in value:
            value = np.load(folder / value["__npy__"], mmap_mode="r" if mmap else None, allow_pickle=False)
        elif f.name == "regions":
            value = tuple(records.Region(r["image_index"], tuple(r["box"]), r["area"], r["score"]) for r in value)
        elif f.name == "k_curve":
            value = {int(k): float(v) for k, v in value.items()}
        elif "tuple" in str(hints.get(f.name, "")) and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def save_object(path: str | os.PathLike, obj: Any) -> None:
    """Pickle a fitted component (torch tensors included) atomically."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


# Where plugin modules lived before the one-family-per-folder layout: runs fitted then still load for ``predict``.
_P = "anomaly_clustering.plugins."
MOVED_MODULES = {
    _P + "fca.localizer": _P + "blind_lca.localizer",
    _P + "fca.torch_model": _P + "blind_lca.torch_model",
    _P + "binarizers.quantile": _P + "blind_lca.quantile",
    _P + "binarizers.mebin": _P + "ncd.mebin",
    _P + "binarizers.threshold": _P + "common.threshold",
    _P + "binarizers.oracle": _P + "common.oracle",
    _P + "clusterers.sklearn_clusterers": _P + "common.clusterers",
    _P + "simple": _P + "common.color_stats",
    _P + "blind_lca.sohn": _P + "sohn.representations",
}


class _Unpickler(pickle.Unpickler):
    """Reads fitted components, mapping the modules that moved (``MOVED_MODULES``) to their new place."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


def load_object(path: str | os.PathLike) -> Any:
    try:
        with open(path, "rb") as f:
            return _Unpickler(f).load()
    except Exception as exc:  # noqa: BLE001 - a damaged pickle can raise almost anything (ValueError, KeyError, …)
        raise StoreError(f"{path}: cannot load fitted component ({exc.__class__.__name__}: {str(exc)[:160]})") from None


class StageCache:
    """Completed stage outputs under ``root/<stage>/<key>/``; an entry counts only once its ``_COMPLETE`` marker
    (with the checksum of every file) is in place, so a crash mid-write leaves nothing that looks valid."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str, verify: bool = True) -> Path | None:
        """The entry's folder if it is complete (and its checksums match when ``verify``), else None; a corrupt
        entry is removed so it gets recomputed."""
        p = self.path(stage, key)
        marker = p / COMPLETE
        if not marker.exists():
            return None
        if verify:
            try:
                sums = json.loads(marker.read_text())
                for name, (size, sha) in sums.items():
                    fp = p / name
                    if fp.stat().st_size != size or (size < (64 << 20) and _file_sha(fp) != sha):
                        raise StoreError(name)
            except (OSError, ValueError, StoreError, TypeError):
                shutil.rmtree(p, ignore_errors=True)
                return None
        return p

    @contextlib.contextmanager
    def entry(self, stage: str, key: str) -> Iterator[Path]:
        """Write a new entry: yields a temporary folder private to this writer (named with its pid and a random
        part), seals it with checksums and renames it into place in one step. When another process sealed the same
        key first, its entry stays and this one is dropped (one key, one result), so a reader never sees an entry
        torn, nor vanish or change under it."""
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
        try:
            yield tmp
            _seal(tmp)
            self._install(tmp, final, stage, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _install(self, tmp: Path, final: Path, stage: str, key: str) -> None:
        """Rename the sealed ``tmp`` to ``final`` unless a valid entry is already there; a leftover that is not one
        (unsealed, damaged) is moved aside first."""
        for _ in range(10):
            try:
                os.rename(tmp, final)  # atomic; refuses to replace a non-empty folder
                _fsync_dir(final.parent)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise StoreError(f"cannot write {final}: {exc.strerror or exc}") from None
            if self.lookup(stage, key) is not None:
                return  # another writer finished the same key first
            old = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old")
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        raise StoreError(f"cannot write {final}: other processes keep replacing it")


def _seal(folder: Path) -> None:
    """Write the ``_COMPLETE`` marker: every file's size and checksum (what :meth:`StageCache.lookup` verifies)."""
    sums = {}
    for fp in sorted(folder.rglob("*")):
        if fp.is_file():
            sums[fp.relative_to(folder).as_posix()] = (fp.stat().st_size, _file_sha(fp))
    (folder / COMPLETE).write_text(json.dumps(sums))


class NpyRows:
    """Rows of an on-disk ``.npy`` array, read on demand with ``os.pread`` (no memory map).

    A memory map keeps every page a stage has touched in the process's resident memory until it is unmapped, so
    a pass over 16 k images' features would hold all of them; reading rows into fresh buffers leaves them to the
    page cache instead, and the stage's own memory stays at one batch. Index like an array: an int, a slice or a
    sequence of row indices (contiguous runs are read in one call)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
            self.offset = f.tell()
        if fortran:
            raise StoreError(f"{self.path}: a Fortran-ordered array cannot be read by rows")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _read(self, start: int, count: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        want = count * self.row_bytes
        buf = os.pread(self._fd, want, self.offset + start * self.row_bytes)
        if len(buf) != want:
            raise StoreError(f"{self.path}: file is shorter than its header says (truncated?)")
        return np.frombuffer(buf, self.dtype).reshape(count, *self.shape[1:])

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return self._read(i, 1)[0].copy()
        if isinstance(key, slice):
            rows = np.arange(n)[key]
        else:
            rows = np.asarray(key)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64).ravel()
            rows = np.where(rows < 0, rows + n, rows)
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        j = 0
        while j < len(rows):  # contiguous ascending runs in one read each
            k = j + 1
            while k < len(rows) and rows[k] == rows[k - 1] + 1:
                k += 1
            out[j:k] = self._read(int(rows[j]), k - j)
            j = k
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"] = None
        return state

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


class ShardedArrayWriter:
    """A large N×… array filled shard by shard into an on-disk ``.npy``, resumable after a crash.

    Completed shards are recorded (with their checksums) in ``progress.json``; on restart the writer reports which
    rows are still missing, and a shard whose checksum no longer matches is computed again. Shards are written with
    ``pwrite`` and read back with :class:`NpyRows` (no memory map), so the writer's resident memory stays at one shard
    however large the array. Several processes may fill one array (a multi-process run): the one with
    ``create=True`` makes the file, every process records the shards it wrote in its own ``progress.<rank>.json``,
    and all of them are merged when the writer is opened.
    """

    def __init__(self, folder: str | os.PathLike, shape: tuple[int, ...], dtype: Any, shard_size: int, create: bool = True, rank: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shape, self.dtype, self.shard_size = tuple(shape), np.dtype(dtype), int(shard_size)
        self.file = self.folder / "data.npy"
        self.progress_file = self.folder / ("progress.json" if rank == 0 else f"progress.{rank}.json")
        layout = {"shape": list(self.shape), "dtype": self.dtype.str, "shard": self.shard_size}
        done: dict[str, str] = {}
        if self.file.exists():
            for f in sorted(self.folder.glob("progress*.json")):
                with contextlib.suppress(ValueError, OSError):
                    state = json.loads(f.read_text())
                    if state.get("layout") == layout:
                        done.update(state.get("done", {}))
        if create and (not done or not self.file.exists()):
            for f in self.folder.glob("progress*.json"):
                f.unlink(missing_ok=True)
            self.file.unlink(missing_ok=True)
            header = np.lib.format.open_memmap(self.file, mode="w+", dtype=self.dtype, shape=self.shape)  # header + sparse body
            del header
        self.array = NpyRows(self.file)  # read access (checksums, tests)
        if self.array.shape != self.shape or self.array.dtype != self.dtype:
            raise StoreError(f"{self.file}: holds {self.array.shape} {self.array.dtype}, expected {self.shape} {self.dtype}")
        self._fd: int | None = os.open(self.file, os.O_RDWR)
        self.layout, self.done = layout, done
        for shard in list(self.done):  # verify completed shards: a torn or corrupt one is recomputed
            if self._shard_sha(int(shard)) != self.done[shard]:
                del self.done[shard]
        self._mine: dict[str, str] = {}

    @property
    def n_shards(self) -> int:
        return (self.shape[0] + self.shard_size - 1) // self.shard_size

    def shard_rows(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.shape[0], (shard + 1) * self.shard_size))

    def pending(self) -> list[int]:
        return [s for s in range(self.n_shards) if str(s) not in self.done]

    def _shard_sha(self, shard: int) -> str:
        rows = self.shard_rows(shard)
        return hashlib.sha256(np.ascontiguousarray(self.array[rows.start : rows.stop]).tobytes()).hexdigest()[:16]

    def write(self, shard: int, values: np.ndarray) -> None:
        rows = self.shard_rows(shard)
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(values, self.dtype), (len(rows), *self.shape[1:]))).tobytes()
        offset = self.array.offset + rows.start * self.array.row_bytes
        try:
            written = os.pwrite(self._fd, data, offset)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            raise StoreError(f"cannot write {self.file}: {exc.strerror or exc}") from None
        self.done[str(shard)] = self._mine[str(shard)] = hashlib.sha256(data).hexdigest()[:16]
        record = self.done if self.progress_file.name == "progress.json" else self._mine
        atomic_write_text(self.progress_file, json.dumps({"layout": self.layout, "done": record}))

    def close(self) -> None:
        self.array.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
