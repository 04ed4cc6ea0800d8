"""Small tensor operations on feature maps that several plugin families share (FCA localizers, Blind-LCA
representations, clusterers): per-instance 0–1 scaling, Gaussian blur with reflect padding, the anomaly-weighted
image descriptor of Blind-LCA's eq. 2, the top-fraction mean of anomaly maps (an image score), and nearest-centroid
assignment."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["scale_per_instance", "gaussian_kernel1d", "gaussian_blur", "weighted_descriptor", "topk_mean", "nearest_centroid"]


def scale_per_instance(f: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min–max scale each channel of each image to [0, 1] over its spatial positions (B×C×H×W → same shape);
    a constant channel becomes 0. This is the "rescaled between 0 and 1 per instance" of FCA and Blind-LCA."""
    if f.ndim != 4:
        raise ValueError(f"scale_per_instance expects B×C×H×W, got shape {tuple(f.shape)}")
    flat = f.flatten(2)
    lo = flat.amin(dim=2, keepdim=True)
    hi = flat.amax(dim=2, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(f)


def gaussian_kernel1d(sigma: float, kernel_size: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of ``kernel_size`` taps (default 2·ceil(1.5σ)+1: 5 taps for σ = 1, 7 for σ = 2,
    the sizes the Blind-LCA reference uses)."""
    if kernel_size is None:
        kernel_size = 2 * math.ceil(1.5 * sigma) + 1
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of every channel of a B×C×H×W tensor, reflect-padded (replicate where the map is
    too small to reflect). ``kernel_size`` defaults to 2·ceil(1.5σ)+1. σ ≤ 0 returns ``x`` unchanged."""
    if x.ndim != 4:
        raise ValueError(f"gaussian_blur expects B×C×H×W, got shape {tuple(x.shape)}")
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, kernel_size, x.dtype).to(x.device)
    r = k.numel() // 2
    if r == 0:
        return x
    b, c, h, w = x.shape
    mode = "reflect" if min(h, w) > r else "replicate"
    y = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.view(b, c, h, w)


def weighted_descriptor(features: torch.Tensor, maps: torch.Tensor, tau: float = 0.002, blur_sigma: float = 2.0) -> torch.Tensor:
    """Blind-LCA eq. 2: one C-vector per image, the features weighted by softmax(anomaly / τ) over all positions.

    As in the authors' code, the features are first blurred (Gaussian σ = ``blur_sigma``; 7×7 for σ = 2) and centred
    (spatial mean subtracted per channel). ``maps`` (B×H'×W') are resized bilinearly to the feature grid when their
    size differs. B×C×H×W, B×H'×W' → B×C."""
    if features.ndim != 4 or maps.ndim != 3 or maps.shape[0] != features.shape[0]:
        raise ValueError(f"weighted_descriptor expects B×C×H×W features and B×H×W maps, got {tuple(features.shape)}, {tuple(maps.shape)}")
    h, w = features.shape[-2:]
    maps = maps.to(features.dtype)
    if maps.shape[-2:] != (h, w):
        maps = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    f = gaussian_blur(features, blur_sigma) if blur_sigma > 0 else features
    f = f - f.mean(dim=(2, 3), keepdim=True)
    weights = torch.softmax(maps.flatten(1) / tau, dim=1)  # B×HW
    return torch.einsum("bcp,bp->bc", f.flatten(2), weights)


def topk_mean(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Image scores: the mean of each map's top ``fraction`` of values (at least one value; 0 → the max)."""
    flat = maps.flatten(1)
    k = max(1, int(round(fraction * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(1)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean) of every row of ``x``; a centroid with a non-finite entry
    (an empty cluster) is never chosen. Chunked over rows, so N points never build an N×K×D or N×K float64 block."""
    c = np.asarray(centroids, np.float64)
    usable = np.isfinite(c).all(1)
    c_safe = np.where(usable[:, None], c, 0.0)
    c_norms = (c_safe**2).sum(1)
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        xb = np.asarray(x[s : s + chunk], np.float64)
        d = (xb**2).sum(1)[:, None] - 2.0 * xb @ c_safe.T + c_norms[None]
        d[:, ~usable] = np.inf
        out[s : s + chunk] = d.argmin(1)
    return out
