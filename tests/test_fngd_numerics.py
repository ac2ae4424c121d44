"""Bad input gets a clear error; a singular Gram matrix gets the stated fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD
from fngd.solve import NonFiniteGradientError, damped_solve


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_share_sample_without_ids() -> None:
    m = model()
    pre = FNGD(m, share="sample")
    m(torch.randn(5, 4)).sum().backward()
    with pytest.raises(ValueError, match="sample_ids"):
        pre.step()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"share": "epoch"}, "unknown share 'epoch'; valid: none, sample, iteration"),
        ({"loss_reduction": "max"}, "unknown loss_reduction 'max'; valid: mean, sum"),
        ({"gram": "dense"}, "unknown gram"),
        ({"damping": -1.0}, "damping"),
        ({"share": "iteration"}, "steps_per_epoch"),
        ({"refresh_epochs": 0}, "refresh_epochs"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FNGD(model(), **kwargs)


@pytest.mark.parametrize("share", ["none", "sample"])
def test_nan_loss_names_the_block(share: str) -> None:
    m = model()
    pre = FNGD(m, share=share)
    x = torch.randn(5, 4)
    x[2, 1] = float("nan")
    m(x).sum().backward()
    with pytest.raises(NonFiniteGradientError, match=r"block\(s\) 0, 2"):
        pre.step(sample_ids=torch.arange(5))


def test_nan_in_weighted_sum_phase_names_the_block() -> None:
    m = model()
    pre = FNGD(m, share="sample", check_finite=True)
    ids = torch.arange(5)
    x = torch.randn(5, 4)
    m(x).sum().backward()
    pre.step(sample_ids=ids)
    m.zero_grad()
    x[0, 0] = float("inf")
    pre.prepare(sample_ids=ids)
    m(x).sum().backward()
    with pytest.raises(NonFiniteGradientError, match="block"):
        pre.step(sample_ids=ids)


def test_singular_gram_falls_back_and_stays_finite() -> None:
    m = model().double()
    pre = FNGD(m, share="none", damping=0.0)
    x = torch.randn(1, 4).double().repeat(6, 1)  # six identical samples: rank-1 Gram
    m(x).sum().backward()
    pre.step()
    assert pre.last_solve is not None and pre.last_solve.fallbacks > 0
    assert all(m_.startswith(("jitter", "pinv")) for m_ in pre.last_solve.methods)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_solve_fallback_to_pinv_on_zero_matrix() -> None:
    c, report = damped_solve(torch.zeros(2, 3, 3), shift=0.0)
    assert torch.isfinite(c).all()
    assert report.fallbacks == 2


def test_solve_matches_dense_when_well_posed() -> None:
    torch.manual_seed(0)
    g = torch.randn(3, 5, 7, dtype=torch.float64)
    k = g @ g.transpose(1, 2)
    c, report = damped_solve(k, shift=0.3)
    want = torch.linalg.solve(k + 0.3 * torch.eye(5, dtype=k.dtype), torch.ones(3, 5, 1,
                              dtype=k.dtype))[..., 0]
    assert report.methods == ["cholesky"] * 3
    assert torch.allclose(c, want, rtol=1e-10)


def test_module_called_twice_is_reported() -> None:
    lin = nn.Linear(3, 3)
    pre = FNGD(nn.Sequential(lin), share="none")
    lin(lin(torch.randn(4, 3))).sum().backward()
    with pytest.raises(RuntimeError, match="more than one forward"):
        pre.step()
