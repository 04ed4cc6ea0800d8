"""Refine a run with what the user said: named clusters become labelled base classes, the rest is re-clustered.

A supervised head (logistic regression on the standardised, PCA-reduced embeddings of the run) learns the named
classes from their labelled images; an unlabelled image joins the class the head predicts when it lies within that
class's calibrated radius (a quantile of the labelled members' distances to their centroid; over all labelled images for a class of
fewer than ``min_members``); every other image is
pooled and re-clustered by Ward into as many clusters as were still unnamed. The ``seeded-kmeans`` head instead
runs constrained k-means (Basu et al. 2002) in the run's own embedding space from the current clusters, the
labelled images held in their class. The labelled images are either all
members of named clusters (``base="named"``, AnomalyNCD's base set) or only the images listed under ``move`` in
the user's edit files (``base="reviewed"``; list an image with its own cluster to confirm it): the other members
of named clusters are re-assigned too, and a named cluster without any reviewed image counts as reviewed as a whole. The result is
stored as one more edit file (moves), so ``relabel --undo`` takes it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labelling import EditError, Edits, LabelState, RunLabels

__all__ = ["SupervisedRefit", "refit_run", "reviewed_images"]

BASES = ("named", "reviewed")
HEADS = ("logistic", "seeded-kmeans")


@dataclass(frozen=True)
class RefitResult:
    """The refit's labels (ids of the named clusters kept) and what it did."""

    labels: np.ndarray
    n_labelled: int
    n_accepted: int
    n_pooled: int


class SupervisedRefit:
    """Head on labelled base classes + Ward on the leftovers. Parameters are checked at the start of ``fit``."""

    def __init__(self, head: str = "logistic", quantile: float = 0.9, n_novel: int | None = None, max_dims: int = 64, C: float = 1.0, min_members: int = 5, seed: int = 0):
        self.head = head
        self.quantile = quantile
        self.min_members = min_members
        self.n_novel = n_novel
        self.max_dims = max_dims
        self.C = C
        self.seed = seed

    def _check(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r}: choose one of {', '.join(HEADS)}")
        if not 0 < self.quantile <= 1:
            raise ValueError(f"quantile={self.quantile}: give a value in (0, 1]")
        if self.n_novel is not None and self.n_novel < 0:
            raise ValueError(f"n_novel={self.n_novel}: give 0 or more")

    def fit_assign(self, vectors: np.ndarray, classes: np.ndarray, n_novel: int, init: np.ndarray | None = None) -> RefitResult:
        """``classes``: per row a base-class index (0…C−1) or −1 when unlabelled. Returns per row a class index,
        or C + j for the j-th re-clustered group. ``init`` (the current groups in that numbering) is where the
        ``seeded-kmeans`` head starts."""
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self._check()
        n_novel = self.n_novel if self.n_novel is not None else n_novel
        labelled = classes >= 0
        n_classes = int(classes.max()) + 1 if labelled.any() else 0
        if n_classes == 0:
            raise EditError("refit: no labelled images; name at least one cluster first (relabel --edits)")
        if self.head == "seeded-kmeans":
            if init is None:
                raise ValueError("head='seeded-kmeans' needs the current groups (init)")
            out = seeded_kmeans(np.asarray(vectors, np.float64), classes, init)
            moved = int((out != init)[~labelled].sum())
            return RefitResult(out, int(labelled.sum()), moved, 0)
        x = StandardScaler().fit_transform(np.asarray(vectors, np.float64))
        dims = int(min(self.max_dims, x.shape[1], max(1, len(x) - 1)))
        z = PCA(dims, random_state=self.seed).fit_transform(x) if dims < x.shape[1] else x
        centroids = np.stack([z[classes == c].mean(0) for c in range(n_classes)])
        if n_classes > 1:
            head = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed).fit(z[labelled], classes[labelled])
            predicted = head.predict(z)
        else:
            predicted = np.zeros(len(z), int)
        dist = np.linalg.norm(z - centroids[predicted], axis=1)
        member_dist = np.linalg.norm(z[labelled] - centroids[classes[labelled]], axis=1)
        pooled = float(np.quantile(member_dist, self.quantile))
        per_class = [member_dist[classes[labelled] == c] for c in range(n_classes)]
        radius = np.array([np.quantile(d, self.quantile) if len(d) >= self.min_members else pooled for d in per_class])
        out = np.where(labelled, classes, predicted)
        pool = ~labelled & (dist > radius[predicted])
        if n_novel > 0 and pool.sum() >= 1:
            groups = min(n_novel, int(pool.sum()))
            out[pool] = n_classes + (_ward(z[pool], groups) if groups > 1 else 0)
        else:
            pool[:] = False
        return RefitResult(out, int(labelled.sum()), int((~labelled & ~pool).sum()), int(pool.sum()))


def seeded_kmeans(x: np.ndarray, classes: np.ndarray, init: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Seeded/constrained k-means (Basu et al. 2002) in the run's own embedding space: labelled rows stay in their
    class, the others move to the nearest group mean until nothing changes; starts from ``init``."""
    from scipy.spatial.distance import cdist

    fixed = classes >= 0
    labels = np.where(fixed, classes, init)
    groups = int(labels.max()) + 1
    for _ in range(max_iter):
        present = np.array([np.any(labels == g) for g in range(groups)])
        means = np.stack([x[labels == g].mean(0) if p else np.full(x.shape[1], np.inf) for g, p in enumerate(present)])
        new = np.where(fixed, classes, cdist(x, np.where(np.isfinite(means), means, 1e30)).argmin(1))
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _ward(z: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(z)


def reviewed_images(labels: RunLabels) -> set[str]:
    """Images listed under ``move`` in any edit file of the history (moved or confirmed by hand; refit's own moves
    excluded)."""
    out: set[str] = set()
    for path in labels.history():
        edits = Edits.read(path)
        if not edits.note.startswith("refit"):
            out |= set(edits.move)
    return out


def refit_run(run_dir: str, base: str = "named", quantile: float = 0.9, n_novel: int | None = None, seed: int = 0, head: str = "logistic") -> tuple[LabelState, RefitResult]:
    """Refit a run's unnamed (or unreviewed) images from its named clusters; store the moves as an edit file."""
    if base not in BASES:
        raise EditError(f"--base {base}: choose one of {', '.join(BASES)}")
    labels = RunLabels(run_dir)
    state = labels.state()
    named = sorted(k for k in state.clusters if k in state.names)
    if not named:
        raise EditError(f"--run {run_dir}: no named cluster; name some first (relabel --edits, or the report's name fields)")
    unnamed = [k for k in state.clusters if k not in state.names]
    names = labels.image_names()
    in_named = np.isin(state.labels, named)
    if base == "reviewed":  # a named cluster with no reviewed image counts as reviewed as a whole
        reviewed = in_named & np.isin(names, sorted(reviewed_images(labels)))
        whole = np.isin(state.labels, [k for k in named if not reviewed[state.labels == k].any()])
        in_named = reviewed | whole
    classes = np.full(len(names), -1)
    classes[in_named] = np.searchsorted(named, state.labels[in_named])
    order = {k: j for j, k in enumerate([*named, *unnamed])}
    init = np.array([order[k] for k in state.labels.tolist()])
    refit = SupervisedRefit(head=head, quantile=quantile, n_novel=n_novel, seed=seed)
    try:
        result = refit.fit_assign(labels.vectors(), classes, len(unnamed), init)
    except ValueError as exc:
        raise EditError(f"refit: {exc}") from None
    free = iter([*unnamed, *range(max(state.clusters) + 1, max(state.clusters) + 1 + len(names))])
    novel_ids = {j: next(free) for j in sorted(set(result.labels[result.labels >= len(named)].tolist()))}
    new = np.array([named[c] if c < len(named) else novel_ids[c] for c in result.labels.tolist()])
    moves = {n: int(k) for n, k, old in zip(names, new.tolist(), state.labels.tolist()) if k != old}
    note = f"refit head={head} base={base} quantile={quantile}: {result.n_labelled} labelled, {result.n_accepted} joined a named class, {result.n_pooled} re-clustered"
    return labels.apply(Edits(move=moves, note=note)), result
