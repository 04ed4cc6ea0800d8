"""Plugin discovery through Python entry points (``importlib.metadata``).

One entry-point group per kind; the built-in plugins register through the same groups as any third-party package:

    [project.entry-points."anomaly_clustering.localizers"]
    my-localizer = "my_package.module:MyLocalizer"

A plugin that fails to import, does not implement its interface, or declares an incompatible interface version is
listed as broken (with the reason) and never breaks the CLI or the other plugins. Two plugins of one kind and one
name are a clash: using that name is an error that names both distributions.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .interfaces import INTERFACE_VERSIONS, STAGE_INTERFACES, ClassifierPreset

__all__ = ["GROUPS", "KINDS", "PluginInfo", "PluginError", "discover", "plugins", "get_plugin", "create", "refresh"]

KINDS = ("localizer", "binarizer", "representation", "clusterer", "classifier")
GROUPS = {kind: f"anomaly_clustering.{kind}s" for kind in KINDS}


class PluginError(LookupError):
    """A plugin is unknown, broken or ambiguous; the message says which and why."""


@dataclass
class PluginInfo:
    """One discovered plugin: what ``anomaly-cluster list`` shows."""

    kind: str
    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str
    obj: Any = None
    error: str | None = None
    clash: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.clash

    @property
    def summary(self) -> str:
        if self.obj is None:
            return ""
        s = self.obj.summary
        return s() if callable(s) else str(s)

    @property
    def status(self) -> str:
        if self.clash:
            return "clash: " + ", ".join(self.clash)
        return "ok" if self.error is None else "broken: " + self.error


def _validate(kind: str, obj: Any) -> str | None:
    """Why ``obj`` is not a valid plugin of ``kind`` (None when it is)."""
    expected = INTERFACE_VERSIONS[kind]
    if kind == "classifier":
        if not isinstance(obj, ClassifierPreset):
            return f"is a {type(obj).__name__}, not a ClassifierPreset"
        version = obj.interface_version
    else:
        base = STAGE_INTERFACES[kind]
        if not (inspect.isclass(obj) and issubclass(obj, base)):
            return f"does not implement the {base.__name__} interface (subclass anomaly_clustering.interfaces.{base.__name__})"
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            return f"is abstract: implement {missing}"
        version = getattr(obj, "interface_version", None)
    if version != expected:
        return f"declares {kind} interface version {version}, this anomaly-clustering provides version {expected}"
    return None


_CACHE: dict[str, dict[str, PluginInfo]] | None = None


def refresh() -> None:
    """Forget what was discovered (after installing or removing a plugin package in-process)."""
    global _CACHE
    _CACHE = None


def discover() -> dict[str, dict[str, PluginInfo]]:
    """All plugins per kind, name → PluginInfo. Loads every entry point; never raises for a bad plugin."""
    global _CACHE
    if _CACHE is not None:
        return _CACHE
    found: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
    seen: set[tuple[str, str, str]] = set()
    for kind, group in GROUPS.items():
        for ep in metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            if (ep.name, ep.value, dist_name) in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add((ep.name, ep.value, dist_name))
            info = PluginInfo(kind, ep.name, ep.value, dist_name, version)
            try:
                info.obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a broken plugin must never break the CLI
                if isinstance(exc, KeyboardInterrupt):
                    raise
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                info.error = f"failed to import {ep.value}: {last}"
            else:
                info.error = _validate(kind, info.obj)
            if ep.name in found[kind]:
                other = found[kind][ep.name]
                both = tuple(sorted({*other.clash, f"{other.distribution} ({other.value})", f"{dist_name} ({ep.value})"}))
                other.clash = both
                info.clash = both
                found[kind][ep.name] = other  # keep the first; the clash marks both
                continue
            found[kind][ep.name] = info
    _CACHE = found
    return found


def plugins(kind: str | None = None) -> list[PluginInfo]:
    """Discovered plugins (of one kind, or all), sorted by kind and name."""
    d = discover()
    kinds = [kind] if kind else list(KINDS)
    return [d[k][n] for k in kinds for n in sorted(d[k])]


def get_plugin(kind: str, name: str) -> Any:
    """The class (or classifier preset) registered as ``name``; PluginError says why when it cannot be used."""
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
    d = discover()[kind]
    if name not in d:
        ok = sorted(n for n, i in d.items() if i.ok)
        raise PluginError(f"--{kind} {name}: no such {kind}; available: {', '.join(ok) or 'none'}")
    info = d[name]
    if info.clash:
        raise PluginError(f"--{kind} {name}: two installed packages register this name: {' and '.join(info.clash)}; uninstall one")
    if info.error:
        raise PluginError(f"--{kind} {name}: plugin from {info.distribution} {info.version} is broken: {info.error}")
    return info.obj


def create(kind: str, name: str, **options: Any) -> Any:
    """Instantiate a stage plugin with options; an unknown option is a PluginError naming it."""
    cls = get_plugin(kind, name)
    params = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_kwargs]
    if unknown:
        valid = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_POSITIONAL]
        raise PluginError(f"--{kind}.{unknown[0]}: {name!r} has no option {unknown[0]!r}; its options: {', '.join(valid) or 'none'}")
    return cls(**options)
