"""Execution settings every stage shares: compute device, progress bars, cache folder, and the Lightning Fabric of a
multi-process run — like scikit-learn's ``config_context``, none of them changes a result (a seed is a plugin
parameter, so that it shows in ``get_params`` and in the cache key).

The pipeline sets them for the duration of a run (``with runtime.settings(...)``); a plugin reads them with
``runtime.device()``, ``runtime.progress(...)``, ``runtime.cache_dir()``, so no stage needs extra arguments. When
``fit`` runs on several devices or nodes (``--devices 2 --strategy ddp``), every process runs the whole pipeline:
the stages that run a network share their work through the helpers at the end of this module (``rank_share``,
``gather_rows``) and train through :func:`anomaly_clustering.training.train` (DDP on the run's ``fabric()``), every
other stage computes the same result on each process, and only the main process writes the cache and the run folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

import torch

__all__ = [
    "Settings", "settings", "current", "device", "progress", "cache_dir", "resolve_device", "log",
    "fabric", "world_size", "rank", "is_main", "barrier", "broadcast", "rank_share", "gather_rows",
]

T = TypeVar("T")
log = logging.getLogger("anomaly_clustering")


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    quiet: bool = False
    cache_dir: str | None = None
    num_workers: int = 0
    fabric: Any = None  # a launched lightning.Fabric when the run spans several processes, else None


_current: contextvars.ContextVar[Settings] = contextvars.ContextVar("anomaly_clustering_settings", default=Settings())


def current() -> Settings:
    return _current.get()


@contextlib.contextmanager
def settings(**changes) -> Iterator[Settings]:
    """Override settings inside a ``with`` block (nested blocks stack)."""
    new = replace(_current.get(), **changes)
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return dev


def device() -> torch.device:
    """The compute device of this process (in a multi-process run: the one Lightning assigned to this rank)."""
    f = current().fabric
    return f.device if f is not None else resolve_device(current().device)


def cache_dir() -> Path:
    """Where stages keep cached arrays (features, maps…): the run's cache, or ``$ANOMALY_CLUSTERING_CACHE``."""
    d = current().cache_dir or os.environ.get("ANOMALY_CLUSTERING_CACHE") or str(Path.home() / ".cache" / "anomaly_clustering")
    path = Path(d)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar (on stderr) unless the run is quiet."""
    if current().quiet or not is_main():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------- several processes
def fabric() -> Any:
    """The run's launched ``lightning.Fabric`` (several processes), or None in a one-process run."""
    return current().fabric


def world_size() -> int:
    f = current().fabric
    return int(f.world_size) if f is not None else 1


def rank() -> int:
    f = current().fabric
    return int(f.global_rank) if f is not None else 0


def is_main() -> bool:
    """True in the one process of a plain run, and in rank 0 of a multi-process run (it writes the cache/run)."""
    return rank() == 0


def barrier() -> None:
    f = current().fabric
    if f is not None and f.world_size > 1:
        f.barrier()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every process (identity in a one-process run)."""
    f = current().fabric
    return f.broadcast(value, src=0) if f is not None and f.world_size > 1 else value


def rank_share(n: int) -> range:
    """The contiguous block of ``range(n)`` this process works on (all of it in a one-process run)."""
    w, r = world_size(), rank()
    per = -(-n // w)
    return range(min(n, r * per), min(n, (r + 1) * per))


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every process's ``rank_share(n)`` rows (``local``) into the full n-row tensor, on every process."""
    f = current().fabric
    if f is None or f.world_size == 1:
        return local
    per = -(-n // f.world_size)
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype)
    padded[: len(local)] = local.cpu()
    gathered = f.all_gather(padded.to(f.device)).cpu()  # world×per×…
    return gathered.reshape(-1, *local.shape[1:])[:n]
