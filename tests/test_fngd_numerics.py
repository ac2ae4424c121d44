"""Bad input gets a clear error; a singular Gram matrix gets the stated fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD
from fngd.solve import JITTER_SCALE, JITTER_TRIES, NonFiniteGradientError, damped_solve
from tests.fngd_reference import block_grad, per_sample_block_grads, rel_err


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).flatten(1).sum(1)


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


def test_singular_gram_falls_back_to_the_jittered_solve() -> None:
    """Six identical samples give a rank-1 Gram; with no damping Cholesky fails and the
    gradient is the one of the jittered system, ``eps = 1e-6 (trace(K)/N + 1)``."""
    m = model().double()
    pre = FNGD(m, share="none", damping=0.0)
    x = torch.randn(1, 4).double().repeat(6, 1)
    y = torch.randn(1, 2).double().repeat(6, 1)
    per_sample = per_sample_block_grads(m, x, y, squared_error, ["0", "2"])
    squared_error(m(x), y).mean().backward()
    pre.step()
    assert pre.last_solve is not None
    for i, (name, g) in enumerate(per_sample.items()):
        k = g @ g.T
        n = k.shape[0]
        assert float(k.trace()) > 0, name
        eps = JITTER_SCALE * (float(k.trace()) / n + 1.0)
        assert pre.last_solve.methods[i] == f"jitter({eps:.3g})", name
        c = torch.linalg.solve(k + eps * torch.eye(n, dtype=k.dtype), torch.ones(n, dtype=k.dtype))
        assert rel_err(block_grad(m, name), g.T @ c) < 1e-6, name


def symmetric(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """``Q diag(eigenvalues) Q^T`` in float64 with a random orthogonal Q: a known spectrum."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen,
                                       dtype=torch.float64))
    return (q * torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def jittered(shift: float, tries: int) -> tuple[torch.Tensor, float]:
    """A K for which ``K + shift I`` fails Cholesky until the ``tries``-th tenfold jitter.

    ``K + shift I`` has one eigenvalue of ``-eps / 2``, ``eps`` the jitter that succeeds.
    """
    rest = [3.0, 2.0, 1.0]
    eps_guess = JITTER_SCALE * ((sum(rest) - shift) / 4 + 1.0) * 10.0**tries
    k = symmetric([*(r - shift for r in rest), -shift - eps_guess / 2], seed=tries)
    eps = JITTER_SCALE * (float(k.trace()) / 4 + 1.0) * 10.0**tries
    return k, eps


def ones_solve(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(m, torch.ones(m.shape[0], dtype=m.dtype))


@pytest.mark.parametrize("tries", range(JITTER_TRIES))
def test_solve_jitter_solves_the_jittered_system(tries: int) -> None:
    """Each failed Cholesky grows the jitter tenfold; the answer solves the shifted,
    jittered system, and the report names the jitter that worked."""
    shift = 0.5
    k, eps = jittered(shift, tries)
    c, report = damped_solve(k.unsqueeze(0), shift=shift)
    assert report.methods == [f"jitter({eps:.3g})"]
    assert report.fallbacks == 1
    want = ones_solve(k + (shift + eps) * torch.eye(4, dtype=k.dtype))
    assert rel_err(c[0], want) < 1e-7


def test_solve_pinv_when_every_jitter_fails() -> None:
    """``K + shift I`` with eigenvalues (3, 2, 0, -1): no jitter tried makes it definite, so
    the answer is its pseudo-inverse applied to 1 (the zero direction dropped)."""
    shift = 0.5
    perm = torch.tensor([2, 0, 3, 1])
    k = torch.diag(torch.tensor([3.0, 2.0, 0.0, -1.0], dtype=torch.float64) - shift)[perm][:, perm]
    c, report = damped_solve(k.unsqueeze(0), shift=shift)
    assert report.methods == ["pinv"]
    want = torch.tensor([1 / 3, 1 / 2, 0.0, -1.0], dtype=torch.float64)[perm]
    assert torch.allclose(c[0], want, rtol=1e-12, atol=1e-12)

    dense = symmetric([3.0 - shift, 2.0 - shift, -1.0 - shift, -2.0 - shift], seed=7)
    c, report = damped_solve(dense.unsqueeze(0), shift=shift)
    assert report.methods == ["pinv"]
    m = dense + shift * torch.eye(4, dtype=dense.dtype)
    want = torch.linalg.pinv(m, hermitian=True) @ torch.ones(4, dtype=m.dtype)
    assert rel_err(c[0], want) < 1e-10


def test_solve_reports_each_blocks_own_method() -> None:
    """In one stacked solve, each block gets its own method and its own right answer."""
    shift = 0.5
    well = symmetric([3.0, 2.0, 1.0, 0.5], seed=3)
    jit, eps = jittered(shift, 1)
    bad = symmetric([3.0 - shift, 2.0 - shift, -1.0 - shift, -2.0 - shift], seed=7)
    c, report = damped_solve(torch.stack([well, jit, bad, well]), shift=shift)
    assert report.methods == ["cholesky", f"jitter({eps:.3g})", "pinv", "cholesky"]
    assert report.fallbacks == 2
    eye = torch.eye(4, dtype=torch.float64)
    assert rel_err(c[0], ones_solve(well + shift * eye)) < 1e-10
    assert rel_err(c[1], ones_solve(jit + (shift + eps) * eye)) < 1e-7
    assert rel_err(c[2], ones_solve(bad + shift * eye)) < 1e-10
    assert torch.equal(c[3], c[0])


def test_solve_zero_matrix_is_jittered() -> None:
    """K = 0 with no damping: the first jitter, ``1e-6 (0 + 1)``, gives ``c = 1e6 * 1``."""
    c, report = damped_solve(torch.zeros(2, 3, 3, dtype=torch.float64), shift=0.0)
    assert report.methods == ["jitter(1e-06)"] * 2
    assert torch.allclose(c, torch.full((2, 3), 1e6, dtype=torch.float64), rtol=1e-12)


def test_solve_matches_dense_when_well_posed() -> None:
    torch.manual_seed(0)
    g = torch.randn(3, 5, 7, dtype=torch.float64)
    k = g @ g.transpose(1, 2)
    c, report = damped_solve(k, shift=0.3)
    want = torch.linalg.solve(k + 0.3 * torch.eye(5, dtype=k.dtype), torch.ones(3, 5, 1,
                              dtype=k.dtype))[..., 0]
    assert report.methods == ["cholesky"] * 3
    assert torch.allclose(c, want, rtol=1e-10)


