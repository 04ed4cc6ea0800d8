"""Run-time settings every stage shares: compute device, progress bars, cache folder, seed.

The pipeline sets them for the duration of a run (``with runtime.settings(...)``); a plugin reads them with
``runtime.device()``, ``runtime.progress(...)``, ``runtime.cache_dir()``, so no stage needs extra arguments.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch

__all__ = ["Settings", "settings", "current", "device", "progress", "cache_dir", "resolve_device", "log"]

T = TypeVar("T")
log = logging.getLogger("anomaly_clustering")


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    quiet: bool = False
    cache_dir: str | None = None
    seed: int = 0
    num_workers: int = 0


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
    return resolve_device(current().device)


def cache_dir() -> Path:
    """Where stages keep cached arrays (features, maps…): the run's cache, or ``$ANOMALY_CLUSTERING_CACHE``."""
    d = current().cache_dir or os.environ.get("ANOMALY_CLUSTERING_CACHE") or str(Path.home() / ".cache" / "anomaly_clustering")
    path = Path(d)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar (on stderr) unless the run is quiet."""
    if current().quiet:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
