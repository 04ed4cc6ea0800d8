"""Checks of every command's options before any work, each failure one line naming the option.

Modelled on scikit-learn's ``_parameter_constraints`` / ``validate_params``: each command has a table mapping an
option to the constraints its value may satisfy (any one of them; the vocabulary plugins use too, from
:mod:`.validation`), and :func:`validation.check_options` checks a parsed configuration against it. Checks that look at more than one option (``k_min`` ≤ ``k_max``) or at the file system
(a writable run folder, a weights file that is one) follow the table. Nothing here computes features or fits.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from .validation import NONE, Check, Interval, StrOptions, ValidationError, check_options

from .kselect import K_METHODS  # the estimators of --n_clusters auto

__all__ = [
    "ValidationError",
    "Interval",
    "StrOptions",
    "Check",
    "validate_params",
    "FIT_CONSTRAINTS",
    "validate_fit",
    "validate_fit_images",
    "validate_predict",
    "validate_evaluate",
    "validate_report",
    "check_writable_dir",
    "check_finished_run",
]

STAGES = ("localizer", "binarizer", "representation", "clusterer")


#: Kept under its old name: check a mapping of options against a constraint table.
validate_params = check_options


# ------------------------------------------------------------------------------------------- file-system checks
def _existing_dir(value: Any) -> str | None:
    p = Path(str(value)).expanduser()
    if not p.exists():
        return "no such folder"
    return None if p.is_dir() else "expected a folder, got a file"


def _existing_file(value: Any) -> str | None:
    p = Path(str(value)).expanduser()
    if not p.exists():
        return "no such file"
    return None if p.is_file() else "expected a file, got a folder"


def _writable(value: Any) -> str | None:
    """None when a folder can be made at ``value`` and written to (probed with a real file, so root on a
    read-only mount is caught too), else the reason."""
    p = Path(str(value)).expanduser()
    q = p
    while not q.exists() and not q.is_symlink() and q != q.parent:
        q = q.parent
    if not q.is_dir():
        return f"{q} is a file, not a folder" if q != p else "is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".anomaly-cluster-probe-", dir=q)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in (errno.EROFS,):
            why = "read-only file system"
        return f"cannot write in {q} ({why})"
    return None


def check_writable_dir(path: str | os.PathLike, option: str) -> None:
    """Raise ValidationError naming ``option`` unless a folder can be created and written at ``path``."""
    reason = _writable(path)
    if reason:
        raise ValidationError(f"{option} {path}: {reason}")


def _weights(value: Any) -> str | None:
    from .backbones import weights_file_problem

    p = Path(str(value)).expanduser()
    if not p.exists():
        return "no such file or folder"
    return weights_file_problem(str(p)) if p.is_file() else None


def _device(value: Any) -> str | None:
    import torch

    if value in ("auto", "", None):
        return None
    try:
        dev = torch.device(str(value))
    except (RuntimeError, ValueError):
        return "not a device; use auto, cpu, cuda, cuda:N or mps"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine (use --device cpu or auto)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return "MPS is not available on this machine (use --device cpu or auto)"
    elif dev.type != "cpu":
        return "not a device; use auto, cpu, cuda, cuda:N or mps"
    return None


def _backbone(value: Any) -> str | None:
    from .backbones import BACKBONES

    if value in BACKBONES:
        return None
    try:
        import timm

        if timm.is_model(str(value)):
            return None
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return "unknown backbone (see anomaly-cluster list; any timm model name works)"


INPUT_SIZE = Interval(32, 8192, "both", integer=True)
SEED = Interval(0, 2**32 - 1, "both", integer=True)

#: fit's options → the constraints their value may satisfy (any one).
FIT_CONSTRAINTS: dict[str, list[Any]] = {
    "data": [Check(_existing_dir, "an existing folder of images")],
    "normal_dir": [NONE, Check(_existing_dir, "an existing folder of images")],
    "run": [Check(_writable, "a folder that can be written")],
    "cache_dir": [NONE, Check(_writable, "a folder that can be written")],
    "n_clusters": [Interval(1, None, "left", integer=True), StrOptions(["auto"])],
    "k_min": [Interval(2, None, "left", integer=True)],
    "k_max": [Interval(2, None, "left", integer=True)],
    "k_method": [StrOptions(K_METHODS)],
    "stability_resamples": [Interval(0, None, "left", integer=True)],
    "backbone": [NONE, Check(_backbone, "a backbone name")],
    "backbone_weights": [NONE, Check(_weights, "a weights file or folder")],
    "input_size": [NONE, INPUT_SIZE],
    "seed": [NONE, SEED],
    "device": [Check(_device, "auto, cpu, cuda, cuda:N or mps")],
    "num_nodes": [Interval(1, None, "left", integer=True)],
}
#: Options of any stage plugin that get the same checks as the shared setting of that name.
STAGE_CONSTRAINTS: dict[str, list[Any]] = {
    "input_size": [NONE, INPUT_SIZE],
    "backbone": [NONE, Check(_backbone, "a backbone name"), StrOptions(["auto"])],  # patchcore: "auto"
    "backbone_weights": [NONE, Check(_weights, "a weights file or folder")],
}


def _as_dict(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "as_dict"):
        return cfg.as_dict()
    return dict(cfg)


def validate_fit(cfg: Any, pipeline_config: Any = None) -> None:
    """Check every ``fit`` option (and each stage's shared-style options) before any image is read."""
    params = _as_dict(cfg)
    n_clusters = getattr(pipeline_config, "n_clusters", params.get("n_clusters"))
    if isinstance(n_clusters, str) and n_clusters.strip().lstrip("-").isdigit():
        n_clusters = int(n_clusters)
    params["n_clusters"] = n_clusters
    check_options(params, FIT_CONSTRAINTS)
    if params.get("k_min", 2) > params.get("k_max", 10):
        raise ValidationError(f"--k_min {params['k_min']} --k_max {params['k_max']}: k_min must not exceed k_max")
    if pipeline_config is not None:
        for stage in STAGES:
            spec = pipeline_config.spec(stage)
            check_options(spec.options, STAGE_CONSTRAINTS, prefix=f"--{stage}.")


def validate_fit_images(images: Any, n_clusters: int | str, k_min: int = 2) -> None:
    """Checks that need the image count (read, not processed): enough distinct images for the clusters asked."""
    distinct = len(set(images.digests))
    n = len(images)
    if n < 2:
        raise ValidationError(f"--data {images.root}: {n} image; at least 2 are needed to cluster")
    if distinct == 1:
        raise ValidationError(f"--data {images.root}: all {n} images are identical; there is nothing to cluster")
    if n_clusters == "auto" and distinct < 3:
        raise ValidationError(
            f"--n_clusters auto: choosing K needs at least 3 distinct images, --data {images.root} has {distinct}; give --n_clusters"
        )
    if isinstance(n_clusters, int) and n_clusters > distinct:
        what = f"{distinct} distinct images" if distinct < n else f"images ({n})"
        raise ValidationError(f"--n_clusters {n_clusters}: more clusters than {what}")


# ------------------------------------------------------------------------------------- predict / evaluate / report
RUN_FILES = ("clusters.csv", "summary.json", "config.yaml", "model/pipeline.json")


def check_finished_run(path: Any, option: str = "--run") -> None:
    """Raise ValidationError unless ``path`` is a run folder that ``fit`` finished writing."""
    p = Path(str(path))
    if not p.is_dir():
        raise ValidationError(f"{option} {p}: not a finished anomaly-cluster run (no such folder)")
    missing = [f for f in RUN_FILES if not (p / f).is_file()]
    if missing:
        raise ValidationError(f"{option} {p}: not a finished anomaly-cluster run (no {', '.join(missing)}); run fit again")


def validate_predict(cfg: Any) -> None:
    params = _as_dict(cfg)
    check_finished_run(params["run"])
    check_options(params, {"data": FIT_CONSTRAINTS["data"], "device": FIT_CONSTRAINTS["device"]})
    if params.get("output"):
        check_writable_dir(params["output"], "--output")


def _check_labels(params: Mapping[str, Any]) -> None:
    check_options(params, {"labels": [NONE, Check(_existing_file, "a CSV file with columns image,label")]})


def validate_evaluate(cfg: Any) -> None:
    params = _as_dict(cfg)
    check_finished_run(params["run"])
    _check_labels(params)


def validate_report(cfg: Any) -> None:
    params = _as_dict(cfg)
    check_finished_run(params["run"])
    _check_labels(params)
    check_writable_dir(Path(str(params["run"])) / "report", "--run")
