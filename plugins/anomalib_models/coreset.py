"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), fast on the CPU.

The same algorithm as anomalib's ``KCenterGreedy`` — start at a random patch, repeatedly add the patch farthest
from everything chosen so far — with each step's distances computed as ``‖z‖² − 2 z·c + ‖c‖²`` from precomputed
squared norms (one matrix–vector product over the bank instead of a full difference array and a norm), and a random
projection only for rows wider than 256 dimensions. 25× anomalib's steps per second here, with a covering radius
no larger (``benchmarks/coreset_speed.py``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["greedy_coreset"]


def greedy_coreset(
    features: torch.Tensor, n_select: int, projection_dim: int = 256, seed: int = 0, chunk_rows: int = 65536
) -> torch.Tensor:
    """Indices (int64, length ``n_select``, distinct) of a greedy k-center coreset of the rows of ``features`` (N×D).

    Rows are projected to ``projection_dim`` Gaussian random directions (Johnson–Lindenstrauss; anomalib's eps = 0.9
    gives 200–300) only when D is larger: Lite0's 152-d embeddings are used as they are. The start is drawn from
    ``seed``, so a selection is reproducible."""
    if features.ndim != 2:
        raise ValueError(f"greedy_coreset expects an N×D matrix, got shape {tuple(features.shape)}")
    n = features.shape[0]
    if not 1 <= n_select <= n:
        raise ValueError(f"greedy_coreset: cannot select {n_select} of {n} rows")
    gen = torch.Generator().manual_seed(seed)
    x = features.float()
    if x.shape[1] > projection_dim:
        proj = (torch.randn(x.shape[1], projection_dim, generator=gen) / math.sqrt(projection_dim)).to(x.device)
        z = torch.cat([x[i : i + chunk_rows] @ proj for i in range(0, n, chunk_rows)])
    else:
        z = x.contiguous()
    sq = z.pow(2).sum(dim=1)
    chosen = torch.empty(n_select, dtype=torch.long)
    idx = int(torch.randint(n, (1,), generator=gen))
    min_dist = torch.full((n,), float("inf"), device=z.device)
    step = torch.empty(n, device=z.device)
    for k in range(n_select):
        chosen[k] = idx
        if k == n_select - 1:
            break
        torch.mv(z, z[idx], out=step)  # z·c
        step.mul_(-2).add_(sq).add_(sq[idx])  # ‖z − c‖² (up to rounding)
        torch.minimum(min_dist, step, out=min_dist)
        min_dist[idx] = -math.inf  # never picked again: rounding can leave a chosen row's own distance above 0
        idx = int(torch.argmax(min_dist))
    return chosen
