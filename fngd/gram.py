"""The N x N Gram matrix ``K_ij = g_i . g_j`` of per-sample gradients, two ways.

With ``g_i = sum_t D_it A_it^T`` (A: module inputs with a ones column for the bias, D:
output gradients, T positions per sample: 1 for a plain Linear, tokens for sequences,
patches for Conv2d):

- pairwise: ``K_ij = sum_{t,s} (A_it . A_js)(D_it . D_js)``, no per-sample gradient is
  built; about ``2 N^2 T^2 (p + q)`` flops. For T = 1 it is ``(A A^T) * (D D^T)``.
- explicit: build ``G_i = D_i^T A_i`` (q x p) for every sample, then ``K = G G^T``;
  about ``2 N T p q + 2 N^2 p q`` flops and ``N p q`` numbers of memory.

``choose`` picks the cheaper one per layer (the mixed ghost-norm choice of the
differentially-private training literature).

A grouped convolution's operands carry a group dimension, (N, G, T, p) and (N, G, T, q):
its per-sample gradient is the G groups' side by side, so ``K`` is the sum of the groups'
Gram matrices (both paths).
"""

from __future__ import annotations

from typing import Literal

import torch

GramPath = Literal["pairwise", "explicit"]

# The pairwise path is computed in row chunks of at most this many matrix entries.
PAIRWISE_CHUNK_ELEMENTS = 1 << 25


def pairwise_flops(n: int, t: int, p: int, q: int) -> int:
    return 2 * n * n * t * t * (p + q) + n * n * t * t


def explicit_flops(n: int, t: int, p: int, q: int) -> int:
    return 2 * n * t * p * q + 2 * n * n * p * q


def choose(n: int, t: int, p: int, q: int) -> GramPath:
    """The cheaper path by flop count for a block with these sizes (per group: the groups'
    costs add up alike on both paths)."""
    return "pairwise" if pairwise_flops(n, t, p, q) <= explicit_flops(n, t, p, q) else "explicit"


def sizes(a: torch.Tensor, d: torch.Tensor) -> tuple[int, int, int]:
    """``(T, p, q)`` of operands ``A`` (N, [G,] T, p) and ``D`` (N, [G,] T, q)."""
    return a.shape[-2], a.shape[-1], d.shape[-1]


def gram_pairwise(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``K`` from ``A`` (N, T, p) and ``D`` (N, T, q) without per-sample gradients (with a
    group dimension, (N, G, T, .): the sum over groups)."""
    if a.dim() == 4:
        return sum(
            (_pairwise(a[:, g], d[:, g]) for g in range(1, a.shape[1])),
            _pairwise(a[:, 0], d[:, 0]),
        )
    return _pairwise(a, d)


def _pairwise(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    n, t, _ = a.shape
    if t == 1:
        a2, d2 = a[:, 0], d[:, 0]
        return (a2 @ a2.T) * (d2 @ d2.T)
    af, df = a.reshape(n * t, -1), d.reshape(n * t, -1)
    rows = max(1, PAIRWISE_CHUNK_ELEMENTS // (n * t * t))
    out = a.new_empty(n, n)
    for i in range(0, n, rows):
        j = min(n, i + rows)
        ka = af[i * t : j * t] @ af.T
        kd = df[i * t : j * t] @ df.T
        out[i:j] = (ka * kd).view(j - i, t, n, t).sum(dim=(1, 3))
    return out


def per_sample_grads(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``G`` (N, q * p): row i is ``vec(D_i^T A_i)``, the block's per-sample gradient (with
    a group dimension: the groups' side by side, (N, G * q * p))."""
    if a.dim() == 4:
        return torch.matmul(d.transpose(-1, -2), a).flatten(1)
    return torch.bmm(d.transpose(1, 2), a).flatten(1)


def gram_explicit(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    g = per_sample_grads(a, d)
    return g @ g.T


def gram(a: torch.Tensor, d: torch.Tensor, path: GramPath) -> torch.Tensor:
    return gram_pairwise(a, d) if path == "pairwise" else gram_explicit(a, d)
