"""Offline weight resolution: which local file holds a backbone's weights (option, environment, a PyPI package),
whether a file is one, and loading it into a model by name or by order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .catalog import OFFLINE_ENV, WEIGHTS_ENV, MissingWeightsError, _info


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

