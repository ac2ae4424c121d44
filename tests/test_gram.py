"""The pairwise and explicit Gram paths agree, and the cost model picks sensibly."""

from __future__ import annotations

import pytest
import torch

from fngd import gram


@pytest.mark.parametrize("t", [1, 3, 17])
def test_pairwise_equals_explicit(t: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(t)
    a = torch.randn(9, t, 6, dtype=torch.float64)
    d = torch.randn(9, t, 4, dtype=torch.float64)
    explicit = gram.gram_explicit(a, d)
    assert torch.allclose(gram.gram_pairwise(a, d), explicit, rtol=1e-10)
    monkeypatch.setattr(gram, "PAIRWISE_CHUNK_ELEMENTS", 50)  # force row chunks
    assert torch.allclose(gram.gram_pairwise(a, d), explicit, rtol=1e-10)


def test_explicit_rows_are_per_sample_gradients() -> None:
    torch.manual_seed(0)
    a, d = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    g = gram.per_sample_grads(a, d)
    assert torch.allclose(g[1], (d[1].T @ a[1]).flatten(), atol=1e-6)


def test_choose() -> None:
    assert gram.choose(n=128, t=1, p=513, q=512) == "pairwise"  # plain Linear
    assert gram.choose(n=128, t=1024, p=577, q=64) == "explicit"  # early ResNet conv
    assert gram.choose(n=64, t=2, p=100, q=100) == "pairwise"  # short sequences
    assert gram.choose(n=64, t=4, p=10, q=10) == "explicit"  # tiny layers
