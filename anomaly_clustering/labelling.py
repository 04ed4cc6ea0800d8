"""Review and correct a run's clusters: names, merges, moves and splits, kept as an ordered history of edit files.

An edit file (YAML or JSON, written by hand or downloaded from the report page) holds any of::

    names: {0: scratch, 2: hole}          # cluster id → name ("" or null clears a name)
    merge: {3: 0}                          # cluster 3 joins cluster 0 (or a list of [source, target] pairs)
    move: {test/hole/003.png: hole}        # image → cluster id or name (a new integer id opens a new cluster)
    split: {cluster: 1, into: 2}           # re-cluster one cluster's members (Ward on the run's embeddings)

Within a file the operations apply in that order (names, merge, move, split), every reference meaning the clusters
as they were before the file, except that ``split`` sees the merges and moves. A name given to two clusters merges
them. The run keeps each applied file under ``<run>/edits/NNN.yaml``; the current labels are the fit's labels with
the history replayed, written to ``<run>/labels.csv`` (image, cluster, name). ``undo`` drops the last file.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from .data import DataError
from .runs import RunFolder
from .store import atomic_write_text

__all__ = ["EditError", "Edits", "LabelState", "RunLabels", "apply_edits", "split_members", "describe"]

EDIT_KEYS = ("names", "merge", "move", "split", "note")


class EditError(DataError):
    """An edit file that cannot apply to the run (unknown cluster, image or key); the message names it."""


@dataclass(frozen=True)
class Edits:
    """One edit file, parsed and type-checked (references are resolved against a state by ``apply_edits``)."""

    names: dict[int, str | None] = field(default_factory=dict)
    merge: tuple[tuple[int | str, int | str], ...] = ()
    move: dict[str, int | str] = field(default_factory=dict)
    split: tuple[tuple[int | str, int], ...] = ()
    note: str = ""

    @classmethod
    def from_mapping(cls, data: Any, source: str = "edits") -> "Edits":
        """Check the shape of a parsed edit file; raise EditError naming the bad key."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise EditError(f"{source}: expected a mapping with keys {', '.join(EDIT_KEYS[:4])}")
        unknown = sorted(set(map(str, data)) - set(EDIT_KEYS))
        if unknown:
            raise EditError(f"{source}: unknown key(s) {', '.join(unknown)}; use {', '.join(EDIT_KEYS)}")
        names = {_as_id(k, f"{source}: names"): (None if v in (None, "") else str(v).strip() or None) for k, v in (data.get("names") or {}).items()}
        merge_raw = data.get("merge") or {}
        pairs = list(merge_raw.items()) if isinstance(merge_raw, Mapping) else [tuple(p) for p in merge_raw]
        if any(len(p) != 2 for p in pairs):
            raise EditError(f"{source}: merge takes {{source: target}} or a list of [source, target] pairs")
        move = {str(k): _ref(v) for k, v in (data.get("move") or {}).items()}
        split_raw = data.get("split") or []
        split_raw = [split_raw] if isinstance(split_raw, Mapping) else list(split_raw)
        split = []
        for s in split_raw:
            if not isinstance(s, Mapping) or "cluster" not in s:
                raise EditError(f"{source}: split takes {{cluster: ID, into: N}} (or a list of them)")
            into = int(s.get("into", 2))
            if into < 2:
                raise EditError(f"{source}: split into {into}: give 2 or more")
            split.append((_ref(s["cluster"]), into))
        return cls(names, tuple((_ref(a), _ref(b)) for a, b in pairs), move, tuple(split), str(data.get("note") or ""))

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Edits":
        p = Path(path)
        if not p.is_file():
            raise EditError(f"--edits {p}: no such file")
        try:
            data = yaml.safe_load(p.read_text())  # JSON is YAML: the report's download reads the same way
        except yaml.YAMLError as exc:
            raise EditError(f"--edits {p}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
        return cls.from_mapping(data, f"--edits {p}")

    def as_dict(self) -> dict[str, Any]:
        """The YAML form stored in the history."""
        out: dict[str, Any] = {}
        if self.note:
            out["note"] = self.note
        if self.names:
            out["names"] = {int(k): v for k, v in self.names.items()}
        if self.merge:
            out["merge"] = [[a, b] for a, b in self.merge]
        if self.move:
            out["move"] = dict(self.move)
        if self.split:
            out["split"] = [{"cluster": c, "into": n} for c, n in self.split]
        return out


def _as_id(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EditError(f"{where}: {value!r} is not a cluster id (an integer)") from None


def _ref(value: Any) -> int | str:
    """A cluster reference: an integer id (also given as a digit string) or a cluster name."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass(frozen=True)
class LabelState:
    """Current labels of a run: a cluster id per image (ids stay stable across edits; merged ones fall empty) and
    the names given to clusters."""

    labels: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

    @property
    def clusters(self) -> list[int]:
        """Ids of the non-empty clusters, ascending."""
        return sorted(int(k) for k in np.unique(self.labels))

    def name_of(self, k: int) -> str:
        return self.names.get(int(k), "")

    def display(self, k: int) -> str:
        """The cluster's name, or ``cluster-<id>`` when unnamed."""
        return self.names.get(int(k)) or f"cluster-{int(k)}"

    def resolve(self, ref: int | str, where: str, allow_new: bool = False) -> int:
        """A reference (id or name) → cluster id; raise EditError when it names no cluster."""
        if isinstance(ref, int):
            if ref < 0:
                raise EditError(f"{where}: cluster ids are non-negative, got {ref}")
            if allow_new or ref in self.clusters:
                return ref
            raise EditError(f"{where}: no cluster {ref} (clusters: {self.clusters})")
        hits = [k for k, v in self.names.items() if v == ref and k in self.clusters]
        if not hits:
            raise EditError(f"{where}: no cluster named {ref!r} (names: {sorted(set(self.names.values()))})")
        return hits[0]


def split_members(vectors: np.ndarray, into: int) -> np.ndarray:
    """Ward's split of one cluster's embedding rows into ``into`` groups (deterministic), labels 0…into−1 ordered by
    group size (largest first, so it keeps the cluster's id)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(vectors) < into:
        raise EditError(f"split into {into}: the cluster has only {len(vectors)} image(s)")
    raw = AgglomerativeClustering(n_clusters=into, linkage="ward").fit_predict(np.asarray(vectors, np.float64))
    order = np.argsort(-np.bincount(raw, minlength=into), kind="stable")
    return np.argsort(order)[raw]


def _merge(labels: np.ndarray, names: dict[int, str], pairs: list[tuple[int, int]]) -> np.ndarray:
    """Labels with each (source, target) merged, chains followed (3→1, 1→0 sends 3 to 0); the target keeps its name,
    or takes the source's when it had none. ``names`` is updated in place."""
    parent: dict[int, int] = {}

    def root(k: int) -> int:
        while parent.get(k, k) != k:
            k = parent[k]
        return k

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
            if rb not in names and ra in names:
                names[rb] = names[ra]
            names.pop(ra, None)
    if not parent:
        return labels
    lookup = np.arange(int(labels.max()) + 1)
    lookup = np.array([root(int(k)) for k in lookup])
    return lookup[labels]


def apply_edits(state: LabelState, edits: Edits, names_index: Mapping[str, int], vectors: np.ndarray | None = None) -> LabelState:
    """A new state with ``edits`` applied (names, merge, move, split, in that order). ``names_index``: image name
    → row; ``vectors``: one embedding row per image (needed by ``split``)."""
    labels = state.labels.copy()
    names = dict(state.names)
    new_ids = {r for r in edits.move.values() if isinstance(r, int)}
    for k, name in edits.names.items():  # 1. names (also of a cluster a move of this file opens)
        state.resolve(k, "names", allow_new=k in new_ids)
        if name is None:
            names.pop(k, None)
        else:
            names[k] = name
    with_names = replace(state, names=dict(names))
    pairs = [(with_names.resolve(a, "merge"), with_names.resolve(b, "merge")) for a, b in edits.merge]
    labels = _merge(labels, names, pairs)  # 2. merges
    after_merge = labels.copy()
    for image, ref in edits.move.items():  # 3. moves (a new integer id opens a cluster)
        if image not in names_index:
            raise EditError(f"move: {image!r} is not an image of this run")
        target = with_names.resolve(ref, f"move {image}", allow_new=True)
        labels[names_index[image]] = after_merge[state.labels == target][0] if np.any(state.labels == target) else target
    same = {}  # a name given to two clusters merges them (into the lowest id)
    for k in sorted(set(labels.tolist())):
        if k in names:
            same.setdefault(names[k], []).append(k)
    labels = _merge(labels, names, [(k, ks[0]) for ks in same.values() for k in ks[1:]])
    for ref, into in edits.split:  # 4. splits, on the labels as they stand now
        current = LabelState(labels, names)
        if isinstance(ref, int) and ref not in current.clusters and np.any(state.labels == ref):
            ref = int(labels[state.labels == ref][0])  # the cluster it was merged into
        k = current.resolve(ref, "split")
        if vectors is None:
            raise EditError("split: the run's embeddings are needed")
        members = np.flatnonzero(labels == k)
        parts = split_members(vectors[members], into)
        fresh = int(labels.max()) + 1
        labels[members[parts > 0]] = fresh + parts[parts > 0] - 1
    return LabelState(labels.astype(np.int64), {k: v for k, v in names.items() if np.any(labels == k)})


class RunLabels:
    """The edit history and current labels of one run folder (``<run>/edits/``, ``<run>/labels.csv``)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run = RunFolder.open(run_dir)
        self.path = self.run.path
        self.edits_dir = self.path / "edits"

    # ------------------------------------------------------------------------------------------------- reading
    def history(self) -> list[Path]:
        """The applied edit files, oldest first."""
        if not self.edits_dir.is_dir():
            return []
        return sorted(p for p in self.edits_dir.glob("[0-9][0-9][0-9]*.yaml") if p.is_file())

    def image_names(self) -> list[str]:
        return list(self.run.images().names)

    def vectors(self) -> np.ndarray:
        """One embedding row per image, the space the run's clusters were formed in."""
        return np.asarray(self.run.record("embeddings").image_vectors(), np.float64)

    def initial(self) -> LabelState:
        """The fit's own labels, unnamed."""
        return LabelState(np.asarray(self.run.record("clustering").labels, np.int64).copy(), {})

    def state(self, history: list[Path] | None = None) -> LabelState:
        """The fit's labels with every edit file of the history applied in order."""
        files = self.history() if history is None else history
        state = self.initial()
        if not files:
            return state
        index = {n: i for i, n in enumerate(self.image_names())}
        edits = [Edits.read(f) for f in files]
        vectors = self.vectors() if any(e.split for e in edits) else None
        for e in edits:
            state = apply_edits(state, e, index, vectors)
        return state

    # ------------------------------------------------------------------------------------------------- writing
    def apply(self, edits: Edits) -> LabelState:
        """Check ``edits`` against the current state, then store them as the next history file and rewrite labels.csv."""
        index = {n: i for i, n in enumerate(self.image_names())}
        new = apply_edits(self.state(), edits, index, self.vectors() if edits.split else None)  # fails before writing
        n = len(self.history()) + 1
        self.edits_dir.mkdir(exist_ok=True)
        atomic_write_text(self.edits_dir / f"{n:03d}.yaml", yaml.safe_dump(edits.as_dict(), sort_keys=False, allow_unicode=True))
        self.write_table(new)
        return new

    def undo(self) -> LabelState:
        """Drop the last edit file (kept under ``edits/undone/``) and rewrite labels.csv."""
        files = self.history()
        if not files:
            raise EditError(f"--run {self.path}: nothing to undo (no edits applied)")
        undone = self.edits_dir / "undone"
        undone.mkdir(exist_ok=True)
        state = self.state(files[:-1])
        os.replace(files[-1], undone / f"{files[-1].stem}-{len(list(undone.iterdir())):03d}.yaml")
        self.write_table(state)
        return state

    def write_table(self, state: LabelState) -> Path:
        """``labels.csv``: image, cluster, name (empty when unnamed)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["image", "cluster", "name"])
        for name, k in zip(self.image_names(), state.labels.tolist()):
            w.writerow([name, int(k), state.name_of(k)])
        atomic_write_text(self.path / "labels.csv", buf.getvalue())
        return self.path / "labels.csv"


def describe(state: LabelState) -> str:
    """One line: each cluster's id, name and size."""
    sizes = np.bincount(state.labels)
    return ", ".join(f"{k}{'=' + state.names[k] if k in state.names else ''} ({int(sizes[k])})" for k in state.clusters)
