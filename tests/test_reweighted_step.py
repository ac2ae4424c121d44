"""``train_step`` with network-scope FNGD: the reweighted per-sample loss gives the same
step as the plain ``prepare / backward / step`` pattern, at SGD's cost (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cell.step import train_step
from fngd import phases
from fngd.optimizers import build

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Tiny:
    """A float64 MLP on random points; ``per_sample_loss`` as the workloads give it."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 5, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 3, (24,), generator=g)
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def batches(self, epoch: int):
        order = torch.randperm(24, generator=torch.Generator().manual_seed(epoch))
        for i in range(3):
            ids = order[8 * i : 8 * (i + 1)]
            yield self.x[ids], self.y[ids], ids


class Nesting:
    """A phase recorder keeping (phase, enclosing phase) pairs."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.seen: list[tuple[str, str | None]] = []

    def begin(self, name: str) -> object:
        self.seen.append((name, self.stack[-1] if self.stack else None))
        self.stack.append(name)
        return name

    def end(self, token: object) -> None:
        self.stack.pop()


def _opt(model: nn.Module, share: str = "sample"):
    return build(
        "fngd",
        model,
        lr=0.1,
        momentum=0.9,
        damping=0.05,
        scope="network",
        share=share,
        steps_per_epoch=3,
    )


@pytest.mark.parametrize("share", ["sample", "iteration"])
def test_reweighted_step_matches_plain_pattern(share: str) -> None:
    reweighted, plain = Tiny(), Tiny()
    opt_r, opt_p = _opt(reweighted.model, share), _opt(plain.model, share)
    opt_p.reweight = lambda sample_ids=None: False  # the plain pattern: no reweighting
    for epoch in range(3):
        for (x, y, ids), _ in zip(reweighted.batches(epoch), plain.batches(epoch), strict=True):
            rec_r, rec_p = Nesting(), Nesting()
            previous = phases.set_recorder(rec_r)
            try:
                loss_r = train_step(reweighted, opt_r, x, y, ids)
                phases.set_recorder(rec_p)
                loss_p = train_step(plain, opt_p, x, y, ids)
            finally:
                phases.set_recorder(previous)
            assert opt_r.mode == opt_p.mode == ("inversion" if epoch == 0 else "weighted_sum")
            torch.testing.assert_close(loss_r, loss_p, rtol=1e-12, atol=1e-12)
            for p_r, p_p in zip(
                reweighted.model.parameters(), plain.model.parameters(), strict=True
            ):
                torch.testing.assert_close(p_r.grad, p_p.grad, rtol=1e-9, atol=1e-12)
                torch.testing.assert_close(p_r, p_p, rtol=1e-9, atol=1e-12)
            if epoch > 0:  # the reweighted backward is autograd's own: no weighted sum inside
                assert ("fngd/weighted_sum", "backward") not in rec_r.seen
                assert ("fngd/weighted_sum", "backward") in rec_p.seen


def test_reweighted_loss_is_the_ordinary_loss() -> None:
    """The returned loss is the unweighted batch loss, not the reweighted objective."""
    w = Tiny()
    opt = _opt(w.model)
    for epoch in range(2):
        for x, y, ids in w.batches(epoch):
            with torch.no_grad():
                expected = F.cross_entropy(w.model(x), y)
            loss = train_step(w, opt, x, y, ids)
            torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
