"""Phase vocabulary and the one context manager every optimiser times itself with.

Each phase is a ``torch.profiler.record_function`` range (so it shows in traces) and,
when a recorder is installed (the benchmark runner installs one), a timed interval.
Keeping both behind one call keeps the names in traces, records and reports identical.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch

# Every phase name of the suite, once; the tuples below group them by who enters them.
DATA, FORWARD, BACKWARD, UPDATE = "data", "forward", "backward", "update"
FNGD_GRAM, FNGD_SOLVE, FNGD_WEIGHTED_SUM = "fngd/gram", "fngd/solve", "fngd/weighted_sum"
KFAC_FACTORS, KFAC_INVERSE, KFAC_PRECONDITION = (
    "kfac/factors", "kfac/inverse", "kfac/precondition"
)
# kfac-pytorch does factors, inverses and preconditioning inside one call it does not label.
KFAC_PYTORCH_STEP = "kfac-pytorch/step"

COMMON = (DATA, FORWARD, BACKWARD, UPDATE)
FNGD = (FNGD_GRAM, FNGD_SOLVE, FNGD_WEIGHTED_SUM)
# Exact NGD (FNGD with share="none") inverts at every step: its phases are the inversion's.
NGD = (FNGD_GRAM, FNGD_SOLVE)
KFAC = (KFAC_FACTORS, KFAC_INVERSE, KFAC_PRECONDITION)
KFAC_PYTORCH = (KFAC_PYTORCH_STEP,)
ALL = COMMON + FNGD + KFAC + KFAC_PYTORCH


class PhaseRecorder(Protocol):
    """Receives the start and end of every phase; ``begin`` returns a token for ``end``."""

    def begin(self, name: str) -> object: ...

    def end(self, token: object) -> None: ...


_lock = threading.Lock()
_recorder: PhaseRecorder | None = None


def set_recorder(recorder: PhaseRecorder | None) -> PhaseRecorder | None:
    """Install ``recorder`` process-wide (autograd may call phases from its own thread)."""
    global _recorder
    with _lock:
        previous, _recorder = _recorder, recorder
    return previous


def get_recorder() -> PhaseRecorder | None:
    return _recorder


class _Phase:
    """A ``record_function`` range plus a recorder interval (a class: cheaper than a generator)."""

    __slots__ = ("name", "recorder", "token", "range")

    def __init__(self, name: str, recorder: PhaseRecorder | None) -> None:
        self.name = name
        self.recorder = recorder

    def __enter__(self) -> None:
        # The profiler range only while a profiler runs: timed steps must not pay for it.
        self.range = torch.profiler.record_function(self.name) if _profiler_enabled() else None
        if self.range is not None:
            self.range.__enter__()
        if self.recorder is not None:
            self.token = self.recorder.begin(self.name)

    def __exit__(self, *exc: object) -> None:
        if self.recorder is not None:
            self.recorder.end(self.token)
        if self.range is not None:
            self.range.__exit__(None, None, None)


def _profiler_enabled() -> bool:
    return bool(torch._C._autograd._profiler_enabled())


def phase(name: str) -> AbstractContextManager[None]:
    """Label (and, with a recorder installed, time) the enclosed work as ``name``.

    With neither a profiler running nor a recorder installed this returns a shared no-op
    context, so the labels cost next to nothing in plain training.
    """
    recorder = _recorder
    if recorder is None and not _profiler_enabled():
        return _NOOP
    return _Phase(name, recorder)


_NOOP = nullcontext()
