"""MuSc's tensor operations (Li et al., ICLR 2024): LNAMD patch aggregation, chunked mutual scoring, RsCIN.

Pure functions on torch tensors so they run on whatever device the inputs live on; the N² patch comparisons are
streamed in blocks of images whose distance matrix stays under ``max_elements`` numbers.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["lnamd", "mutual_scores", "rscin", "DEFAULT_MAX_ELEMENTS"]

#: Upper bound on the entries of one block's distance matrix (2^26 float32 = 256 MiB).
DEFAULT_MAX_ELEMENTS = 1 << 26


def layer_norm_map(features: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of every position of a B×C×h×w map (no affine parameters)."""
    return F.layer_norm(features.permute(0, 2, 3, 1), features.shape[1:2]).permute(0, 3, 1, 2)


def lnamd(normalized: torch.Tensor, r: int) -> torch.Tensor:
    """Local neighbourhood aggregation of degree ``r``: each patch becomes the mean of its r×r neighbourhood
    (zero padded), B×C×h×w → B×(h·w)×C.

    MuSc flattens the r×r×C neighbourhood and average-pools it to a fixed dimension; when that dimension equals C
    (as here, where C is the layer's width) the pooling is exactly this per-channel neighbourhood mean.
    """
    if r > 1:
        normalized = F.avg_pool2d(normalized, r, stride=1, padding=r // 2, count_include_pad=True)
    return normalized.flatten(2).transpose(1, 2).contiguous()


def _blocks(n: int, size: int) -> Iterable[range]:
    for s in range(0, n, size):
        yield range(s, min(n, s + size))


def mutual_scores(
    queries: torch.Tensor,
    reference: torch.Tensor,
    exclude: Sequence[int] | None = None,
    interval: float = 0.3,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    device: torch.device | None = None,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
) -> torch.Tensor:
    """MuSc's mutual scoring. ``queries``: Nq×P×C patch features, ``reference``: Nr×Q×C (kept on their device,
    e.g. CPU float16; blocks are moved to ``device`` as float32). For every query patch and every reference image
    the distance to that image's nearest patch; the patch's score is the mean of the smallest ``interval`` fraction
    of those per-image distances. ``exclude[i]`` is the reference index of query i itself (or -1): that image is
    left out, so an anomaly never matches itself. Returns Nq×P scores (float32, CPU)."""
    device = device or queries.device
    nq, p, _ = queries.shape
    nr, q, _ = reference.shape
    excl = torch.full((nq,), -1, dtype=torch.long) if exclude is None else torch.as_tensor(list(exclude), dtype=torch.long)
    per_query = max(1, int(math.sqrt(max_elements / (p * q))))
    qb = max(1, min(nq, per_query))
    rb = max(1, min(nr, max_elements // max(1, qb * p * q)))
    out = torch.empty(nq, p)
    for qi in progress(list(_blocks(nq, qb))):
        zq = queries[qi.start : qi.stop].to(device, torch.float32).reshape(-1, queries.shape[-1])
        nearest = torch.empty(len(qi), p, nr, device=device)
        for rj in _blocks(nr, rb):
            zr = reference[rj.start : rj.stop].to(device, torch.float32).reshape(-1, reference.shape[-1])
            d = torch.cdist(zq, zr)  # (bq·P) × (br·Q)
            nearest[:, :, rj.start : rj.stop] = d.view(len(qi), p, len(rj), q).amin(-1)
            del d
        own = excl[qi.start : qi.stop].to(device)
        rows = torch.nonzero(own >= 0).flatten()
        if len(rows):
            nearest[rows, :, own[rows]] = float("inf")
        counts = nr - (own >= 0).long()  # per query
        k = torch.clamp((counts.float() * interval).ceil().long(), min=1)
        smallest = nearest.topk(int(k.max()), dim=-1, largest=False).values  # bq×P×kmax, ascending
        take = torch.arange(smallest.shape[-1], device=device).view(1, 1, -1) < k.view(-1, 1, 1)
        out[qi.start : qi.stop] = ((smallest * take).sum(-1) / k.view(-1, 1)).cpu()
    return out


def rscin(scores: torch.Tensor, image_features: torch.Tensor, ks: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
    """RsCIN image-level re-scoring: min–max normalised scores smoothed over the k-nearest-neighbour graph of the
    images' global features (cosine similarity, self included, rows normalised), averaged over ``ks``."""
    s = scores.float()
    s = (s - s.min()) / (s.max() - s.min()).clamp_min(1e-12)
    f = F.normalize(image_features.float(), dim=1)
    sim = f @ f.T
    out = torch.zeros_like(s)
    for k in ks:
        k = min(len(s), k + 1)  # self + k neighbours
        val, idx = sim.topk(k, dim=1)
        w = torch.zeros_like(sim).scatter_(1, idx, val.clamp_min(0) + 1e-12)
        out += (w / w.sum(1, keepdim=True)) @ s
    return out / len(ks)
