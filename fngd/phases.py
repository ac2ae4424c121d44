"""Phase vocabulary and the one context manager every optimiser times itself with.

Each phase is a ``torch.profiler.record_function`` range (so it shows in traces) and,
when a recorder is installed (the benchmark runner installs one), a timed interval.
Keeping both behind one call keeps the names in traces, records and reports identical.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch

COMMON = ("data", "forward", "backward", "update")
FNGD = ("fngd/gram", "fngd/solve", "fngd/weighted_sum")
KFAC = ("kfac/factors", "kfac/inverse", "kfac/precondition")
# kfac-pytorch does factors, inverses and preconditioning inside one call it does not label.
KFAC_PYTORCH = ("kfac-pytorch/step",)
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


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Label (and, with a recorder installed, time) the enclosed work as ``name``."""
    recorder = _recorder
    with torch.profiler.record_function(name):
        if recorder is None:
            yield
            return
        token = recorder.begin(name)
        try:
            yield
        finally:
            recorder.end(token)
