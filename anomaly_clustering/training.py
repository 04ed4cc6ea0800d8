"""The one training loop of every stage that trains a network (the ``fca-vae`` VAE, the contrastive head, MGViT).

``train`` runs a model and its optimizer through Lightning Fabric: the run's multi-process Fabric when there is one
(DDP: gradients averaged across processes), else a one-device Fabric on ``runtime.device()``. The caller keeps
everything that decides a result: it builds and seeds the model, and gives the batches of each epoch through a
callable that draws them from its own generator, lazily, in the order it always drew them — so the loop never
changes what a stage's random numbers are used for. Helpers for the batch order: ``shuffled_batches`` (a seeded
shuffle in index batches) and ``deal_out`` (this process's equal share of an epoch's order).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from . import runtime

__all__ = ["TrainingLog", "train", "shuffled_batches", "deal_out", "fabric_for"]

B = TypeVar("B")
Order = TypeVar("Order", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class TrainingLog:
    """What a training run went through: each epoch's step losses (this process's steps) and its seconds."""

    losses: tuple[tuple[float, ...], ...]
    seconds: tuple[float, ...]

    def epoch_totals(self) -> list[float]:
        """The sum of each epoch's step losses (in step order)."""
        return [sum(epoch) for epoch in self.losses]


def fabric_for(device: torch.device | None = None) -> Any:
    """The run's launched ``lightning.Fabric`` when the run spans several processes, else a one-device Fabric on
    ``device`` (default: ``runtime.device()``), full 32-bit precision."""
    if runtime.fabric() is not None:
        return runtime.fabric()
    from lightning.fabric import Fabric

    device = device or runtime.device()
    if device.type == "cpu":
        return Fabric(accelerator="cpu", devices=1, precision="32-true")
    if device.type in ("cuda", "mps"):
        return Fabric(accelerator=device.type, devices=[device.index or 0], precision="32-true")
    raise ValueError(f"training on {device}: only cpu, cuda and mps devices are supported")


def deal_out(order: Order) -> Order:
    """This process's share of an epoch's ``order`` (all of it in a one-process run). DDP processes step together,
    so every share has the same length: the order wraps around, then is dealt out in contiguous blocks."""
    world, rank = runtime.world_size(), runtime.rank()
    if world == 1 or len(order) == 0:
        return order
    per = -(-len(order) // world)
    positions = np.arange(rank * per, (rank + 1) * per) % len(order)
    return order[torch.from_numpy(positions)] if isinstance(order, torch.Tensor) else order[positions]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, repeats: int = 1, min_size: int = 1) -> Iterator[torch.Tensor]:
    """Index batches of one epoch: ``repeats`` shuffles of ``range(n)`` drawn from ``generator`` (all of them when the
    first batch is asked for), this process's share of them, cut into ``batch_size`` pieces; a piece shorter than
    ``min_size`` (the last one) is left out."""
    order = deal_out(torch.cat([torch.randperm(n, generator=generator) for _ in range(repeats)]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) >= min_size:
            yield batch


def _has_graph(loss: torch.Tensor) -> bool:
    return loss.requires_grad and loss.grad_fn is not None


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[B]],
    loss: Callable[[nn.Module, B], torch.Tensor],
    epochs: int = 1,
    *,
    scheduler: Any = None,
    device: torch.device | None = None,
    desc: str = "training",
    steps_per_epoch: int | None = None,
    flush_denormal: bool = False,
) -> TrainingLog:
    """Train ``model`` in place for ``epochs`` passes; returns the step losses.

    ``batches(epoch)`` gives that epoch's batches (drawn as the loop asks for them; the caller seeds and orders
    them); each batch goes to the device, then ``loss(wrapped_model, batch)`` gives a scalar. The optimizer (and
    ``scheduler``, per step) steps on every loss that has a graph; a loss without one (nothing to learn from that
    batch) is recorded but takes no step — which a multi-process run forbids (its processes step together).
    ``steps_per_epoch`` sizes the progress bar; ``flush_denormal`` flushes denormal floats to zero during training
    (Adam's second moments of rarely active units underflow to denormals, which make CPU arithmetic ~100× slower).
    """
    fabric = fabric_for(device)
    wrapped, optimizer_ = fabric.setup(model, optimizer)
    wrapped.train()
    losses: list[list[float]] = [[] for _ in range(epochs)]
    seconds: list[float] = []

    def steps() -> Iterator[tuple[int, B]]:
        for epoch in range(epochs):
            start = time.perf_counter()
            for batch in batches(epoch):
                yield epoch, batch
            seconds.append(time.perf_counter() - start)

    total = steps_per_epoch * epochs if steps_per_epoch is not None else None
    flush = torch.set_flush_denormal(True) if flush_denormal else False
    try:
        for epoch, batch in runtime.progress(steps(), desc=desc, total=total, unit="step"):
            value = loss(wrapped, fabric.to_device(batch))
            _step(fabric, optimizer_, scheduler, value)
            losses[epoch].append(float(value.detach()))
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return TrainingLog(tuple(map(tuple, losses)), tuple(seconds))


def _step(fabric: Any, optimizer: torch.optim.Optimizer, scheduler: Any, value: torch.Tensor) -> None:
    """One optimizer step on ``value`` (none when it has no graph)."""
    if not _has_graph(value):
        if fabric.world_size > 1:
            raise RuntimeError("a batch gave a loss without a graph in a multi-process run, where every process must "
                               "take every step: make the loss depend on the model's output (e.g. + 0 · output.sum())")
        return
    optimizer.zero_grad(set_to_none=True)
    fabric.backward(value)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
