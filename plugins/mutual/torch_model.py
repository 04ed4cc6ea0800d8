"""Tensor operations of the mutual localizer: per-layer normalisation, neighbourhood aggregation, mutual scoring of
patches against a sampled reference subset of the set, map smoothing and the image score (top-k mean less a share of the map's median).

Pure functions on torch tensors (no project imports), so they run on whatever device their inputs live on; the
only cross-image work is ``mutual_scores``, linear in the number of query images for a fixed reference subset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from anomaly_clustering.features_ops import topk_mean

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "aggregate",
    "fit_projection",
    "gaussian_blur",
    "image_scores",
    "mutual_scores",
    "normalize_layers",
    "robust_scale",
    "self_scores",
    "topk_mean",
]

#: Upper bound on the entries of one block's distance matrix (2^24 float32 = 64 MiB).
DEFAULT_MAX_ELEMENTS = 1 << 24


def normalize_layers(features: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
    """LayerNorm each layer's channel block of a B×C×h×w map separately and scale it by 1/√C_l, so every layer
    weighs the same in a Euclidean distance whatever its width (C = Σ ``channels``)."""
    if sum(channels) != features.shape[1]:
        raise ValueError(f"channels {list(channels)} do not add up to the features' {features.shape[1]}")
    parts = torch.split(features, list(channels), dim=1)
    out = [F.layer_norm(p.permute(0, 2, 3, 1), p.shape[1:2]).permute(0, 3, 1, 2) / math.sqrt(p.shape[1]) for p in parts]
    return torch.cat(out, dim=1)


def aggregate(normalized: torch.Tensor, degrees: Sequence[int]) -> torch.Tensor:
    """MuSc's local neighbourhood aggregation: for each degree r the r×r neighbourhood mean (replicate padding, so
    the border is not pulled towards zero); the degrees are concatenated (scaled by 1/√len) along the channels."""
    outs = []
    for r in degrees:
        if r > 1:
            pad = r // 2
            x = F.avg_pool2d(F.pad(normalized, (pad, pad, pad, pad), mode="replicate"), r, stride=1)
        else:
            x = normalized
        outs.append(x)
    return torch.cat(outs, dim=1) / math.sqrt(len(outs))


def fit_projection(samples: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of ``samples`` (S×C): its mean (C) and the top-``dim`` principal axes (C×dim)."""
    mean = samples.mean(0)
    x = samples - mean
    dim = min(dim, x.shape[1])
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return mean, v[:dim].T.contiguous()


def _blocks(n: int, size: int) -> Iterable[range]:
    for s in range(0, n, size):
        yield range(s, min(n, s + size))


def mutual_scores(
    queries: torch.Tensor,
    reference: torch.Tensor,
    exclude: Sequence[int] | torch.Tensor | None = None,
    quantile: float = 0.3,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    device: torch.device | None = None,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
) -> torch.Tensor:
    """Mutual scoring against a reference subset. ``queries``: Nq×P×D patch vectors, ``reference``: M×Q×D.

    For every query patch the distance to the nearest patch of each reference image; the score is the mean of the
    smallest ``quantile`` fraction of those M per-image distances (a low-quantile aggregate: a defect shared by a
    few reference images still scores high, a patch every image has scores low). ``exclude[i]`` is the reference
    index of query i itself (or -1), left out so an image never matches itself. Cost Nq·P·M·Q·D: linear in Nq.
    Returns Nq×P float32 scores on the CPU."""
    device = device or queries.device
    nq, p, dim = queries.shape
    m, q, _ = reference.shape
    excl = torch.full((nq,), -1, dtype=torch.long) if exclude is None else torch.as_tensor(exclude, dtype=torch.long)
    ref = reference.to(device, torch.float32)
    ref_sq = (ref * ref).sum(-1)  # M×Q
    qb = max(1, min(nq, max_elements // max(1, p * m * q)))
    rb = max(1, min(m, max_elements // max(1, qb * p * q)))
    out = torch.empty(nq, p)
    counts = m - (excl >= 0).long()
    k_all = torch.clamp((counts.float() * quantile).ceil().long(), min=1)
    for blk in progress(list(_blocks(nq, qb))):
        zq = queries[blk.start : blk.stop].to(device, torch.float32).reshape(-1, dim)
        zq_sq = (zq * zq).sum(-1, keepdim=True)
        nearest = torch.empty(len(blk) * p, m, device=device)
        for rj in _blocks(m, rb):
            zr = ref[rj.start : rj.stop].reshape(-1, dim)
            d2 = torch.addmm(zq_sq + ref_sq[rj.start : rj.stop].reshape(1, -1), zq, zr.T, alpha=-2.0)
            nearest[:, rj.start : rj.stop] = d2.view(-1, len(rj), q).amin(-1)
            del d2
        nearest = nearest.clamp_min_(0).sqrt_().view(len(blk), p, m)
        own = excl[blk.start : blk.stop].to(device)
        rows = torch.nonzero(own >= 0).flatten()
        if len(rows):
            nearest[rows, :, own[rows]] = float("inf")
        k = k_all[blk.start : blk.stop].to(device)
        smallest = nearest.topk(int(k.max()), dim=-1, largest=False).values
        take = torch.arange(smallest.shape[-1], device=device).view(1, 1, -1) < k.view(-1, 1, 1)
        out[blk.start : blk.stop] = ((smallest * take).sum(-1) / k.view(-1, 1)).cpu()
    return out


def self_scores(
    patches: torch.Tensor,
    grid: tuple[int, int],
    radius: int = 2,
    quantile: float = 0.5,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """Within-image evidence: each patch against the *other* patches of its own image (``patches``: B×P×D, P = h·w
    of ``grid``). Patches within ``radius`` cells (Chebyshev) are left out, so a patch is not matched with its own
    neighbourhood; the score is the mean of the smallest ``quantile`` fraction of the distances to the rest (what is
    rare inside the image scores high, as in FCA). Cost B·P²·D: per image. Returns B×P float32 scores on the CPU."""
    b, p, _ = patches.shape
    h, w = grid
    if h * w != p:
        raise ValueError(f"grid {grid} does not match the {p} patches per image")
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    near = ((yy[:, None] - yy[None, :]).abs() <= radius) & ((xx[:, None] - xx[None, :]).abs() <= radius)  # P×P
    far = (~near).sum(1)
    if int(far.min()) < 1:
        raise ValueError(f"radius {radius} leaves no patch to compare with on a {h}×{w} grid")
    k_row = torch.clamp((far.float() * quantile).ceil().long(), min=1)  # per position (fewer far patches at the centre)
    near = near.to(patches.device)
    k_row = k_row.to(patches.device)
    take = torch.arange(int(k_row.max()), device=patches.device).view(1, -1) < k_row.view(-1, 1)  # P×kmax
    out = torch.empty(b, p)
    for blk in _blocks(b, max(1, max_elements // max(1, p * p))):
        z = patches[blk.start : blk.stop].float()
        d = torch.cdist(z, z).masked_fill_(near, float("inf"))
        smallest = d.topk(take.shape[1], dim=-1, largest=False).values
        out[blk.start : blk.stop] = (torch.where(take, smallest, 0.0).sum(-1) / k_row).cpu()  # where, not ×: inf·0 is NaN
    return out


def robust_scale(scores: torch.Tensor) -> tuple[float, float]:
    """Median and median absolute deviation of ``scores`` (the MAD floored at 1e-6 of the median's scale): the
    per-set normalisation that puts two kinds of evidence on one scale before they are combined."""
    flat = scores.flatten().float()
    if flat.numel() > 1_000_000:  # quantiles of a fixed subsample: torch.median is exact but slow on huge tensors
        flat = flat[torch.linspace(0, flat.numel() - 1, 1_000_000).long()]
    med = float(flat.median())
    mad = float((flat - med).abs().median())
    return med, max(mad, 1e-6 * max(1.0, abs(med)))


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B×H×W maps (reflect padding); ``sigma`` in pixels, 0 = unchanged."""
    if sigma <= 0:
        return maps
    radius = max(1, int(3 * sigma + 0.5))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    m = maps.unsqueeze(1)
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return m.squeeze(1)


def image_scores(maps: torch.Tensor, fraction: float, median_weight: float = 0.0) -> torch.Tensor:
    """Image scores: the mean of each map's top ``fraction`` minus ``median_weight`` × the map's own median, so an
    image whose whole map is raised (a busy layout, a rare texture) does not outrank one with a local defect."""
    scores = topk_mean(maps, fraction)
    if median_weight:
        scores = scores - median_weight * maps.flatten(1).median(1).values
    return scores
