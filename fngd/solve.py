"""The damped N x N solve ``c = (K + shift I)^-1 1`` for a stack of blocks at once.

The shift is ``N lam`` (``damping_mode="constant"``) or ``lam trace(K) / N``, lam times K's
mean eigenvalue (``"relative"``: scaling the loss by s scales K and the shift by s^2, so
the natural gradient ``G c`` scales by exactly 1/s, as undamped NGD's does).

Cholesky first (K is symmetric positive semi-definite, the shift makes it definite).
Where it fails, or its result is not finite (a singular K with zero damping), the stated
fallback: add jitter ``eps = 1e-6 * (trace(K)/N + 1)``, growing tenfold, up to
``JITTER_TRIES`` times; then the pseudo-inverse (SVD), which always exists. The result is
never NaN for a finite K. One host synchronisation per call, and one more per fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

JITTER_TRIES = 4
JITTER_SCALE = 1e-6
DAMPING_MODES = ("constant", "relative")

Shift = float | torch.Tensor  # one for every block, or one per block (B,)


class NonFiniteGradientError(FloatingPointError):
    """A block's per-sample gradients contain NaN or inf."""


@dataclass
class SolveReport:
    """What the solve did for each block: 'cholesky', 'jitter(eps)' or 'pinv'."""

    methods: list[str] = field(default_factory=list)

    @property
    def fallbacks(self) -> int:
        return sum(m != "cholesky" for m in self.methods)


def _cholesky_solve(m: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    chol, info = torch.linalg.cholesky_ex(m)
    c = torch.cholesky_solve(rhs, chol)
    ok = (info == 0) & torch.isfinite(c).all(dim=(-2, -1))
    return c, ok


def shift(k: torch.Tensor, damping: float, mode: str = "constant") -> Shift:
    """The diagonal shift for ``k`` (B, N, N): ``N damping``, or per block
    ``damping trace(K) / N`` (relative)."""
    n = k.shape[-1]
    if mode == "constant":
        return n * damping
    if mode == "relative":
        return torch.diagonal(k, dim1=-2, dim2=-1).sum(-1) * (damping / n)
    raise ValueError(f"unknown damping_mode {mode!r}; valid: {', '.join(DAMPING_MODES)}")


def damped_solve(
    k: torch.Tensor, shift: Shift, names: list[str] | None = None
) -> tuple[torch.Tensor, SolveReport]:
    """Solve for every block of ``k`` (B, N, N); returns ``c`` (B, N) and a report.

    ``shift`` is one number, or a (B,) tensor with one per block.
    """
    b, n, _ = k.shape
    names = names or [str(i) for i in range(b)]
    finite = torch.isfinite(k).all(dim=(-2, -1))
    eye = torch.eye(n, dtype=k.dtype, device=k.device)
    rhs = torch.ones(b, n, 1, dtype=k.dtype, device=k.device)
    m = k + (shift.view(-1, 1, 1) if isinstance(shift, torch.Tensor) else shift) * eye
    c, ok = _cholesky_solve(m, rhs)
    flags = torch.stack([finite, ok]).cpu()  # the one synchronisation
    bad = [names[i] for i in range(b) if not flags[0, i]]
    if bad:
        raise NonFiniteGradientError(
            f"non-finite per-sample gradients (NaN or inf) in block(s) {', '.join(bad)}; "
            "check the loss and the learning rate"
        )
    report = SolveReport(["cholesky"] * b)
    for i in (i for i in range(b) if not flags[1, i]):
        c[i], report.methods[i] = _fallback(
            k[i], shift[i] if isinstance(shift, torch.Tensor) else shift
        )
    return c[..., 0], report


def _fallback(k: torch.Tensor, shift: Shift) -> tuple[torch.Tensor, str]:
    n = k.shape[0]
    eye = torch.eye(n, dtype=k.dtype, device=k.device)
    rhs = torch.ones(n, 1, dtype=k.dtype, device=k.device)
    eps = JITTER_SCALE * (float(torch.diagonal(k).mean()) + 1.0)
    for _ in range(JITTER_TRIES):
        c, ok = _cholesky_solve(k + (shift + eps) * eye, rhs)
        if bool(ok):
            return c, f"jitter({eps:.3g})"
        eps *= 10.0
    c = torch.linalg.pinv(k + shift * eye, hermitian=True) @ rhs
    return torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0), "pinv"
