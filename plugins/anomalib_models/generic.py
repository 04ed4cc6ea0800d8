"""Any anomalib image model as a Localizer, trained on the normal reference images, with offline backbone weights.

anomalib's ``TimmFeatureExtractor`` builds its timm model with ``timm.create_model(name, pretrained=pre_trained,
features_only=True, out_indices=...)``, i.e. ``pre_trained=True`` means a hub download. Here every model is built
with ``pre_trained=False`` and the local weights are then loaded into each extractor's timm model
(:func:`inject_local_weights`); a backbone timm does not know (torchvision's ``mobilenet_v2``) replaces the
extractor with anomaly_clustering's FeatureBackbone (:class:`FeatureBackboneAsExtractor`).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomaly_clustering import runtime
from anomaly_clustering.backbones import (
    BACKBONES,
    MissingWeightsError,
    load_weights_into,
    load_state_file,
    create_backbone,
    load_batch,
    resolve_weights,
)
from anomaly_clustering.data import image_size
from anomaly_clustering.interfaces import Localizer
from anomaly_clustering.records import AnomalyMaps, ImageSet
from anomaly_clustering.validation import check_is_fitted

__all__ = ["AnomalibLocalizer", "build_anomalib_model", "inject_local_weights", "FeatureBackboneAsExtractor"]

OFFLINE_BACKBONE = "tf_efficientnet_lite0"
#: Per-backbone default feature layers for anomalib models (timm stage indices or torchvision node names).
DEFAULT_LAYERS = {"tf_efficientnet_lite0": (2, 3), "tf_efficientnet_lite1": (2, 3), "tf_efficientnet_lite2": (2, 3),
                  "mobilenet_v2": ("features.6", "features.13"), "wide_resnet50_2": ("layer2", "layer3")}


class NormalizingExtractor(nn.Module):
    """Wraps an anomalib feature extractor so it takes images in [0, 1] and normalises them for its backbone."""

    def __init__(self, inner: nn.Module, mean, std):
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor):
        return {k: v.contiguous() for k, v in self.inner((x - self.mean) / self.std).items()}


class FeatureBackboneAsExtractor(nn.Module):
    """anomaly_clustering's FeatureBackbone with anomalib's extractor interface: images in [0, 1] → {layer: map}."""

    def __init__(self, backbone: nn.Module, layers):
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.layers, self.backbone.forward_layers(x)))


def default_backbone(weights: str | None = None) -> str:
    """The paper-world default (wide_resnet50_2) when its weights are on disk, else the offline tf_efficientnet_lite0."""
    try:
        if resolve_weights("wide_resnet50_2", weights) is not None and not (weights and "lite" in str(weights)):
            return "wide_resnet50_2"
    except MissingWeightsError:
        pass
    return OFFLINE_BACKBONE


def inject_local_weights(model: nn.Module, backbone: str, weights: str | None) -> list[str]:
    """Load local pretrained weights into every anomalib ``TimmFeatureExtractor`` inside ``model`` (built with
    ``pre_trained=False``), wrapping each so it normalises [0, 1] inputs itself. Returns the weight files used.
    Raises MissingWeightsError when no local file exists: nothing is ever downloaded."""
    import timm
    from anomalib.models.components import TimmFeatureExtractor

    used = []
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, TimmFeatureExtractor) or not isinstance(child.backbone, str):
                continue
            name = child.backbone
            info = BACKBONES.get(name)
            if info is not None and info.source == "torchvision" and name not in timm.list_models():
                fb = create_backbone(name, [str(x) for x in child.layers], weights)
                setattr(parent, child_name, FeatureBackboneAsExtractor(fb, child.layers))
                used.append(resolve_weights(name, weights) or name)
                continue
            path = resolve_weights(name, weights)
            if path is None:
                raise MissingWeightsError(
                    f"anomalib backbone {name!r}: no local weights (pass --localizer.backbone_weights FILE); "
                    "this adapter never downloads"
                )
            full_keys = list(timm.create_model(name, pretrained=False).state_dict().keys())
            load_weights_into(child.feature_extractor, load_state_file(path), full_keys, path)
            cfg = child.feature_extractor.pretrained_cfg
            mean, std = (info.mean, info.std) if info else (cfg.get("mean"), cfg.get("std"))
            setattr(parent, child_name, NormalizingExtractor(child, mean, std))
            used.append(path)
    return used


def _channels(backbone: str, layers) -> int:
    """Total channels of ``layers`` of ``backbone`` (built without weights, for sizing only)."""
    if all(isinstance(x, int) or str(x).isdigit() for x in layers):
        import timm

        body = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=[int(x) for x in layers])
        return int(sum(body.feature_info.channels()))
    return int(create_backbone(backbone, [str(x) for x in layers]).out_channels)


def build_anomalib_model(model: str | dict, backbone: str, layers, weights: str | None, **options: Any):
    """An anomalib Lightning module from ``get_model`` (class name or class_path config), without its
    pre/post-processors, with ``pre_trained=False`` and local weights injected."""
    from anomalib.models import get_model

    cls_kwargs = dict(options)
    module_cls = None
    if isinstance(model, str):
        import anomalib.models as am

        module_cls = next((getattr(am, n) for n in dir(am) if n.lower() == model.lower().replace("_", "")), None)
    params = inspect.signature(module_cls.__init__).parameters if module_cls is not None else {}
    wanted = {"backbone": backbone, "pre_trained": False, "pre_processor": False, "post_processor": False,
              "evaluator": False, "visualizer": False}
    if layers:
        wanted["layers" if "layers" in params or not params else "layer"] = list(layers) if "layer" not in params else layers[-1]
    for k, v in wanted.items():
        if not params or k in params:
            cls_kwargs.setdefault(k, v)
    if "n_features" in params and cls_kwargs.get("n_features") is None and backbone not in ("resnet18", "wide_resnet50_2"):
        cls_kwargs["n_features"] = min(100, _channels(backbone, cls_kwargs.get("layers", layers)))  # PaDiM's random subset
    module = get_model(model, **cls_kwargs)
    inject_local_weights(module, backbone, weights)
    return module


class AnomalibLocalizer(Localizer):
    """Any anomalib image model (``--localizer.model Padim``, a class name or class_path config) fit on the normal images.

    Built with ``pre_trained=False`` plus local backbone weights (see the module docstring), trained on
    ``normal_images`` (without them: on the set itself, contaminated), maps resized to ``input_size``. Memory-bank
    models (PatchCore, PaDiM, DFM, DFKDE…) are fed directly (one no-grad pass, then their ``fit``); models trained
    by gradient descent go through a plain Lightning Trainer for ``max_epochs`` — anomalib's Engine is not used
    because it needs an on-disk datamodule and adds callbacks, thresholding and metrics this pipeline does itself.
    Backbone ``auto``: wide_resnet50_2 when its weights are on disk, else tf_efficientnet_lite0. ``seed`` seeds
    torch before the model is built (random feature subsets, initial weights, batch order).
    """

    def __init__(
        self,
        model: str = "Padim",
        model_options: dict | None = None,
        backbone: str = "auto",
        backbone_weights: str | None = None,
        layers: tuple[str, ...] = (),
        input_size: int = 256,
        batch_size: int = 8,
        max_epochs: int = 1,
        seed: int = 0,
    ):
        self.model = model
        self.model_options = model_options
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.layers = layers
        self.input_size = input_size
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.seed = seed

    def _resolved(self) -> tuple[str, tuple]:
        name = default_backbone(self.backbone_weights) if self.backbone in (None, "", "auto") else self.backbone
        layers = tuple(int(x) if str(x).isdigit() else str(x) for x in self.layers) or DEFAULT_LAYERS.get(name, (2, 3))
        return name, layers

    def _batches(self, images: ImageSet, desc: str):
        for s in runtime.progress(range(0, len(images), self.batch_size), desc=desc, unit="batch"):
            idx = list(range(s, min(len(images), s + self.batch_size)))
            yield idx, load_batch(images, idx, self.input_size)

    def fit(self, images: ImageSet, normal_images: ImageSet | None = None) -> "AnomalibLocalizer":
        from anomalib.data import ImageBatch
        from anomalib.models.components.base.memory_bank_module import MemoryBankMixin

        torch.manual_seed(self.seed)
        train = normal_images if normal_images is not None and len(normal_images) else images
        name, layers = self._resolved()
        module = build_anomalib_model(self.model, name, layers, self.backbone_weights, **dict(self.model_options or {}))
        device = runtime.device()
        module = module.to(device)
        if isinstance(module, MemoryBankMixin):
            module.model.train()
            with torch.no_grad():
                for _, x in self._batches(train, f"anomalib {self.model} fit"):
                    module.training_step(ImageBatch(image=x.to(device)))
            module.fit()
            module._is_fitted = torch.tensor([True])
        else:
            import lightning

            loader = torch.utils.data.DataLoader(
                [ImageBatch(image=x) for _, x in self._batches(train, "load")], batch_size=None, shuffle=True
            )
            trainer = lightning.Trainer(
                max_epochs=self.max_epochs, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                logger=False, enable_checkpointing=False, enable_progress_bar=not runtime.current().quiet,
                enable_model_summary=False, num_sanity_val_steps=0,
            )
            trainer.fit(module, train_dataloaders=loader)
        self.model_ = module.cpu().eval()
        self.backbone_used_ = name
        self.mode_ = "reference" if train is not images else "contaminated"
        return self

    def predict(self, images: ImageSet) -> AnomalyMaps:
        check_is_fitted(self, "model_")
        device = runtime.device()
        torch_model = self.model_.model.to(device).eval()
        maps = np.empty((len(images), self.input_size, self.input_size), np.float32)
        scores = np.empty(len(images), np.float32)
        with torch.no_grad():
            for idx, x in self._batches(images, f"anomalib {self.model} predict"):
                out = torch_model(x.to(device))
                amap = out.anomaly_map.float()
                amap = amap.view(len(idx), 1, *amap.shape[-2:])
                amap = F.interpolate(amap, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)[:, 0]
                maps[idx] = amap.cpu().numpy()
                score = out.pred_score
                scores[idx] = (amap.flatten(1).amax(1) if score is None else score.float().view(-1)).cpu().numpy()
        torch_model.cpu()
        sizes = np.array([image_size(p) for p in images.paths], np.int64).reshape(len(images), 2)
        info = {"method": f"anomalib:{self.model}", "mode": self.mode_, "backbone": self.backbone_used_}
        return AnomalyMaps(maps, scores, sizes, info)
