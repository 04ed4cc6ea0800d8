"""Several devices or nodes for one ``fit``, through Lightning Fabric.

``fit --accelerator cpu|gpu --devices N --num_nodes M --strategy ddp`` launches N processes per node the way
Lightning does (it re-runs the command for ranks 1…N-1; under ``torchrun`` or SLURM it joins the processes those
started). Every process then runs the same pipeline; see :mod:`anomaly_clustering.runtime` for how the stages share
the work and why only rank 0 writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DistributedConfig", "launch", "DistributedConfigError"]


class DistributedConfigError(ValueError):
    """An impossible combination of --accelerator / --devices / --num_nodes / --strategy."""


@dataclass(frozen=True)
class DistributedConfig:
    """Lightning's four settings; the defaults mean one process on the automatically chosen device."""

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"

    @property
    def is_multi_process(self) -> bool:
        devices = self.devices
        if isinstance(devices, str) and devices.isdigit():
            devices = int(devices)
        return self.num_nodes > 1 or devices not in (1, "1") or self.strategy not in ("auto", "single_device")


def launch(config: DistributedConfig) -> Any:
    """A launched ``lightning.Fabric`` for a multi-process run, or None when one process is asked for.

    On CPU the processes talk over gloo, on GPUs over NCCL (Lightning's choice). The caller must call this before
    it does any work: the launcher re-runs the command line for the other ranks."""
    if not config.is_multi_process:
        return None
    import lightning

    accelerator = {"gpu": "cuda"}.get(config.accelerator, config.accelerator)
    if accelerator == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DistributedConfigError("--accelerator gpu: no CUDA device on this machine (use --accelerator cpu)")
    try:
        fabric = lightning.Fabric(accelerator=accelerator, devices=config.devices, num_nodes=config.num_nodes,
                                  strategy=config.strategy, precision="32-true")
    except (ValueError, RuntimeError, TypeError) as exc:  # Lightning's own message names the bad setting
        raise DistributedConfigError(f"--accelerator/--devices/--num_nodes/--strategy: {exc}") from None
    fabric.launch()
    return fabric
