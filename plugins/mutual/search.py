"""Approximate nearest-patch search for the mutual localizer (issue #19's speed target): a faiss inverted-file index
over the reference patches, so each query patch is compared with the patches of a few coarse cells instead of every
reference patch. Used when the score is the single nearest patch over the whole reference sample (``fca-nearest``'s
member), where it returns what the exact search returns up to the index's recall (benchmarks/README.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["NearestPatchIndex", "default_nlist"]

#: faiss wants about 39 training points per coarse cell; fewer make its k-means warn and the cells uneven.
_POINTS_PER_CELL = 39


def default_nlist(n_reference_patches: int) -> int:
    """Coarse cells for ``n`` reference patches: ≈ 4·√n (faiss's rule of thumb), at most n / 39, at least 1."""
    return int(max(1, min(4 * math.sqrt(n_reference_patches), n_reference_patches // _POINTS_PER_CELL)))


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ValueError("search='ivf' needs the faiss package: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


def _index(reference: np.ndarray, nlist: int, nprobe: int, seed: int):
    """An IVF-flat L2 index over the N×D ``reference`` rows, trained on them (k-means seeded by ``seed``)."""
    faiss = _faiss()
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    quantizer = faiss.IndexFlatL2(reference.shape[1])
    index = faiss.IndexIVFFlat(quantizer, reference.shape[1], int(nlist))
    index.cp.seed = int(seed)
    index.train(reference)
    index.add(reference)
    index.nprobe = min(int(nprobe), int(nlist))
    return index


class NearestPatchIndex:
    """The reference patches (M×Q×D) in an IVF index (``nlist`` cells, 0 = automatic; ``nprobe`` searched), built
    once and searched block by block: ``distances(queries, exclude)`` gives each query patch's distance to its nearest
    reference patch, leaving out the patches of the query's own image when it is one of the references."""

    def __init__(self, reference: torch.Tensor, nlist: int = 0, nprobe: int = 32, seed: int = 0):
        self.images, self.patches, self.dim = reference.shape
        self.flat = np.ascontiguousarray(reference.reshape(-1, self.dim).float().cpu().numpy())
        self.index = _index(self.flat, nlist or default_nlist(len(self.flat)), nprobe, seed)

    def distances(self, queries: torch.Tensor, exclude: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Nq×P float32 distances (CPU) of ``queries`` (Nq×P×D); ``exclude[i]``: query i's reference index, or -1."""
        nq, p, dim = queries.shape
        if dim != self.dim:
            raise ValueError(f"queries have {dim} dimensions, the reference {self.dim}")
        excl = np.full(nq, -1) if exclude is None else np.asarray(torch.as_tensor(exclude), np.int64)
        if self.images == 1 and (excl >= 0).any():
            raise ValueError("a one-image reference leaves nothing to compare its own image with")
        faiss = _faiss()
        z = np.ascontiguousarray(queries.float().cpu().numpy())
        out = np.empty((nq, p), np.float32)
        others = np.flatnonzero(excl < 0)
        if len(others):
            out[others] = self.index.search(z[others].reshape(-1, dim), 1)[0][:, 0].reshape(len(others), p)
        q = self.patches
        for i in np.flatnonzero(excl >= 0):  # an image of the reference: its own patches are not candidates
            own = faiss.IDSelectorRange(int(excl[i]) * q, (int(excl[i]) + 1) * q)
            params = faiss.SearchParametersIVF(sel=faiss.IDSelectorNot(own), nprobe=self.index.nprobe)
            out[i] = self.index.search(z[i], 1, params=params)[0][:, 0]
        # a patch whose probed cells hold only its own image's patches gets no candidate (faiss: +inf or 3.4e38)
        missing = ~np.isfinite(out) | (out > 1e30)
        if missing.any():
            out[missing] = _exact_fallback(z, self.flat, excl, q, missing)
        return torch.from_numpy(np.sqrt(np.maximum(out, 0.0)))


def _exact_fallback(z: np.ndarray, flat: np.ndarray, excl: np.ndarray, q: int, missing: np.ndarray) -> np.ndarray:
    """Exact squared nearest distances of the (rare) query patches that the index left without a candidate."""
    values = []
    for i, j in zip(*np.nonzero(missing)):
        d2 = ((flat - z[i, j]) ** 2).sum(1)
        if excl[i] >= 0:
            d2[excl[i] * q : (excl[i] + 1) * q] = np.inf
        values.append(d2.min())
    return np.asarray(values, np.float32)
