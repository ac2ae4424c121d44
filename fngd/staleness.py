"""How stale reused coefficients are: stored against fresh directions on one probe batch.

FNGD reuses coefficients solved in an earlier epoch at other weights. On a probe batch at
the current weights, the direction the stored coefficients give, ``sum_i c_stored_i g_i``,
is compared with a fresh solve's: their cosine and the norm ratio ``||stored|| / ||fresh||``.
``FNGD.staleness(ids)`` returns the context manager; the comparison is here.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fngd.preconditioner import FNGD

Result = dict[str, dict[str, Any]]


def compare(stored: torch.Tensor, fresh: torch.Tensor) -> dict[str, Any]:
    """Cosine of the two directions and ``||stored|| / ||fresh||`` (float64)."""
    stored, fresh = stored.double(), fresh.double()
    ns, nf = stored.norm(), fresh.norm()
    cosine = torch.dot(stored, fresh) / (ns * nf)
    return {"cosine": float(cosine), "norm_ratio": float(ns / nf), "known": True}


def unknown() -> dict[str, Any]:
    """A key whose batch has no stored coefficient: nothing to compare."""
    return {"cosine": None, "norm_ratio": None, "known": False}


class Staleness:
    """``with pre.staleness(ids) as probe: loss.backward()``; then ``probe.result``.

    The backward inside is the probe's: it writes no ``.grad`` and leaves the
    preconditioner's tables, step count and mode as they were.
    """

    def __init__(
        self, owner: FNGD, sample_ids: torch.Tensor | None, iteration: int | None
    ) -> None:
        self.owner = owner
        self.sample_ids = sample_ids
        self.iteration = iteration
        #: key -> {"cosine": float | None, "norm_ratio": float | None, "known": bool}
        self.result: Result = {}
        self._saved: Any = None

    def __enter__(self) -> Staleness:
        self._saved = self.owner._begin_probe()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stash = self.owner._end_probe(self._saved)
        if exc_type is None:
            self.result = self.owner._probe(stash, self.sample_ids, self.iteration)
