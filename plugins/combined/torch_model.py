"""Pure tensor functions of the combined localizer: put maps of different localizers on one scale and merge them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RULES = ("geometric", "mean", "min")


def robust_scale(maps: torch.Tensor, sample: int = 1 << 20, seed: int = 0) -> tuple[float, float]:
    """(median, MAD) of the values of N×H×W ``maps`` (a fixed random sample of at most ``sample`` values);
    a MAD of 0 (a flat map) becomes 1 so that dividing by it is safe."""
    flat = maps.reshape(-1).float()
    if flat.numel() > sample:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:sample]]
    med = flat.median()
    mad = (flat - med).abs().median()
    return float(med), float(mad) if float(mad) > 0 else 1.0


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×H×W maps resized bilinearly to ``size`` (returned as they are when already that size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def merge(standardised: list[torch.Tensor], rule: str) -> torch.Tensor:
    """One map from several N×H×W maps already standardised by their set's median / MAD.

    ``geometric``: the geometric mean of each map's excess over its set median (0 where any map is at or below its
    median): a pixel is anomalous only where *every* localizer says so (an object's outline, bright in a within-image
    map but shared by every image, drops out). ``mean``: the plain mean (any one localizer can raise a pixel).
    ``min``: the smallest excess (the strictest agreement)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; rules: {', '.join(RULES)}")
    stack = torch.stack(standardised)
    if rule == "mean":
        return stack.mean(0)
    excess = stack.clamp_min(0)
    if rule == "min":
        return excess.min(0).values
    return excess.log().mean(0).exp()  # log(0) = -inf → exp → 0: any map at its median zeroes the pixel
