"""The frozen feature extractor: a pretrained CNN (timm or torchvision) returning chosen layers' maps, upsampled
to the finest one and concatenated; :func:`create_backbone` builds it with real weights or fails saying how."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .catalog import DEFAULT_BACKBONE, IMAGENET_MEAN, IMAGENET_STD, OFFLINE_ENV, WEIGHTS_ENV, BackboneConfigError, BackboneInfo, MissingWeightsError, _info
from .weights import load_state_file, load_weights_into, offline, resolve_weights


class FeatureBackbone(nn.Module):
    """A frozen pretrained CNN that returns the chosen layers' maps, each upsampled to the finest one and
    concatenated (C = sum of the layers' channels, at the finest layer's stride)."""

    def __init__(self, body: nn.Module, layers: Sequence[str], mean, std, strides: Sequence[int], channels: Sequence[int]):
        super().__init__()
        self.body = body.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.strides = tuple(strides)
        self.channels = tuple(channels)

    @property
    def out_channels(self) -> int:
        return int(sum(self.channels))

    @property
    def stride(self) -> int:
        return int(min(self.strides))

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer maps for a batch of RGB images in [0, 1] (B×3×H×W)."""
        x = (x - self.mean) / self.std
        out = self.body(x)
        return list(out.values()) if isinstance(out, dict) else list(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.forward_layers(x)
        size = maps[int(np.argmin(self.strides))].shape[-2:]
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        return torch.cat(maps, dim=1)


def create_backbone(name: str = DEFAULT_BACKBONE, layers: Sequence[str] | None = None, weights: str | None = None) -> FeatureBackbone:
    """Build a frozen feature backbone with real pretrained weights (see the package docstring for where they come
    from). ``layers``: timm feature-stage indices (``"2"``) or torchvision node names (``"layer2"``)."""
    info = _info(name)
    layers = tuple(str(x) for x in (layers or info.default_layers))
    path = resolve_weights(name, weights)
    build = _torchvision_backbone if info.source == "torchvision" else _timm_backbone
    return build(name, layers, path, info)


_FIX = f"pass --<stage>.backbone_weights FILE (or set {WEIGHTS_ENV}=FILE_OR_DIR)"


def _no_local_weights(name: str) -> MissingWeightsError:
    return MissingWeightsError(f"backbone {name!r}: no local weights and downloads are off ({OFFLINE_ENV}); {_FIX}")


def _download_failed(name: str, exc: Exception) -> MissingWeightsError:
    return MissingWeightsError(f"backbone {name!r}: no local weights and the download failed ({type(exc).__name__}); {_FIX}")


def _torchvision_backbone(name: str, layers: tuple[str, ...], path: str | None, info: BackboneInfo) -> FeatureBackbone:
    """A torchvision classifier's chosen nodes; strides and channels are measured on a probe image."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        ctor = getattr(torchvision.models, name)
    except AttributeError:
        raise MissingWeightsError(f"unknown torchvision backbone {name!r}") from None
    model = ctor(weights=None)
    if path is not None:
        load_weights_into(model, load_state_file(path), None, path)
        mean, std = info.mean, info.std
    elif offline():
        raise _no_local_weights(name)
    else:
        try:
            wenum = torchvision.models.get_model_weights(name).DEFAULT
            model.load_state_dict(wenum.get_state_dict(progress=False))  # the usual torchvision download
        except Exception as exc:  # offline, or no weights published
            raise _download_failed(name, exc) from None
        mean, std = IMAGENET_MEAN, IMAGENET_STD  # torchvision's own weights expect ImageNet statistics
    try:
        body = create_feature_extractor(model, return_nodes={l: l for l in layers})
    except ValueError as exc:
        raise BackboneConfigError(f"backbone {name!r}: layers {list(layers)} are not node names of this model ({str(exc).splitlines()[0][:120]})") from None
    with torch.no_grad():
        probe = body(torch.zeros(1, 3, 64, 64))
    strides = [64 // v.shape[-1] for v in probe.values()]
    channels = [v.shape[1] for v in probe.values()]
    return FeatureBackbone(body, layers, mean, std, strides, channels)


def _timm_backbone(name: str, layers: tuple[str, ...], path: str | None, info: BackboneInfo) -> FeatureBackbone:
    """A timm model's feature stages ``layers`` (indices); a local file is loaded by name or by order of the full
    classifier's keys."""
    import timm

    try:
        idx = tuple(int(x) for x in layers)
    except ValueError:
        raise BackboneConfigError(f"backbone {name!r}: timm layers are feature-stage indices such as 2,3; got {list(layers)}") from None
    try:
        body = timm.create_model(name, pretrained=False, features_only=True, out_indices=idx)
    except Exception as exc:
        raise MissingWeightsError(f"unknown backbone {name!r} ({exc})") from None
    mean, std = tuple(body.pretrained_cfg.get("mean", info.mean)), tuple(body.pretrained_cfg.get("std", info.std))
    if path is not None:
        full = timm.create_model(name, pretrained=False)
        load_weights_into(body, load_state_file(path), list(full.state_dict().keys()), path)
    elif offline():
        raise _no_local_weights(name)
    else:
        try:
            body = timm.create_model(name, pretrained=True, features_only=True, out_indices=idx)  # the usual hub download
        except Exception as exc:
            raise _download_failed(name, exc) from None
    return FeatureBackbone(body, layers, mean, std, body.feature_info.reduction(), body.feature_info.channels())
