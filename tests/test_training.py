"""The shared training loop (anomaly_clustering.training): it trains, it calls the loss on every batch, it leaves the
random numbers to the caller, it equals a plain PyTorch loop bit for bit, and it deals an epoch out to processes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from anomaly_clustering import runtime, training


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3


def _fit(seed: int, epochs: int = 5, **options) -> tuple[nn.Module, training.TrainingLog, list[torch.Tensor]]:
    """A linear regression trained on shuffled batches of 8 from a generator seeded with ``seed``."""
    x, y = _problem()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    gen = torch.Generator().manual_seed(seed)
    seen: list[torch.Tensor] = []

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        seen.append(batch[0])
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    batches = lambda epoch: ((x[i], y[i]) for i in training.shuffled_batches(len(x), 8, gen))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with runtime.settings(quiet=True, device="cpu"):
        log = training.train(model, opt, batches, loss, epochs, steps_per_epoch=8, **options)
    return model, log, seen


def test_the_loop_trains_and_calls_the_loss_on_every_batch():
    model, log, seen = _fit(seed=1)
    assert len(log.losses) == 5 and all(len(epoch) == 8 for epoch in log.losses) and len(log.seconds) == 5
    assert len(seen) == 40 and all(len(b) == 8 for b in seen)
    totals = log.epoch_totals()
    assert totals[-1] < 0.05 * totals[0]
    assert torch.allclose(model.weight, torch.tensor([[1.0, -2.0, 0.5]]), atol=0.1)


def test_the_callers_generator_decides_the_batches():
    a, log_a, seen_a = _fit(seed=1)
    b, log_b, seen_b = _fit(seed=1)
    c, log_c, seen_c = _fit(seed=2)
    assert log_a.losses == log_b.losses and torch.equal(a.weight, b.weight)
    assert all(torch.equal(p, q) for p, q in zip(seen_a, seen_b))
    assert log_a.losses != log_c.losses and not torch.equal(seen_a[0], seen_c[0])


def test_the_loop_equals_a_plain_pytorch_loop_bit_for_bit():
    """The Fabric wrapper changes no arithmetic: the same steps by hand give the same weights and losses."""
    model, log, _ = _fit(seed=3, epochs=2)
    x, y = _problem()
    torch.manual_seed(0)
    plain = nn.Linear(3, 1)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(2):
        for i in training.shuffled_batches(len(x), 8, gen):
            loss = nn.functional.mse_loss(plain(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert [v for epoch in log.losses for v in epoch] == losses
    assert torch.equal(model.weight, plain.weight) and torch.equal(model.bias, plain.bias)


def test_a_loss_without_a_graph_takes_no_step_and_the_scheduler_steps_with_the_optimizer():
    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls = []

    def loss(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch)
        if len(calls) == 1:
            return torch.zeros((), requires_grad=True)  # nothing to learn from this batch
        return m(batch).pow(2).mean()

    with runtime.settings(quiet=True, device="cpu"):
        log = training.train(model, opt, lambda epoch: [torch.ones(4, 2)] * 3, loss, scheduler=scheduler)
    assert log.losses[0][0] == 0.0 and len(log.losses[0]) == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)  # two steps, not three
    assert not torch.equal(model.weight, before)


def test_no_epochs_no_steps_and_denormals_are_restored():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with runtime.settings(quiet=True, device="cpu"):
        log = training.train(model, opt, lambda epoch: [torch.ones(1, 2)], lambda m, b: m(b).sum(), 0, flush_denormal=True)
    assert log.losses == () and log.seconds == ()
    assert torch.tensor(1e-40).item() != 0.0  # flushing ended with the training


def test_shuffled_batches_cover_every_index_and_drop_short_batches():
    gen = torch.Generator().manual_seed(0)
    batches = list(training.shuffled_batches(10, 4, gen, repeats=2, min_size=3))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]  # 20 indices: the last piece of 0 never shows
    batches = list(training.shuffled_batches(10, 4, gen, repeats=1, min_size=3))
    assert [len(b) for b in batches] == [4, 4]  # the 2-index tail is left out
    full = torch.cat(list(training.shuffled_batches(10, 4, torch.Generator().manual_seed(5))))
    assert sorted(full.tolist()) == list(range(10))


@pytest.mark.parametrize("order", [np.arange(7), torch.arange(7)])
def test_deal_out_gives_every_process_an_equal_share_of_the_wrapped_order(order):
    shares = []
    for rank in range(3):
        with runtime.settings(fabric=SimpleNamespace(world_size=3, global_rank=rank)):
            shares.append([int(i) for i in training.deal_out(order)])
    assert shares == [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    assert training.deal_out(order) is order  # one process: all of it


def test_one_process_trains_on_a_one_device_fabric():
    with runtime.settings(device="cpu"):
        fabric = training.fabric_for()
    assert fabric.world_size == 1 and fabric.device == torch.device("cpu")
    run_fabric = SimpleNamespace(world_size=2, global_rank=0)
    with runtime.settings(fabric=run_fabric):
        assert training.fabric_for() is run_fabric
