"""Phase and step timers: the ``fngd.phases.PhaseRecorder`` the runner installs.

``StepTimer`` groups every phase entered between ``start_step`` and ``end_step`` under that
step and hands back plain dicts at ``flush()`` (the runner calls it once per epoch).

- CPU: ``time.perf_counter`` at ``begin`` and ``end``.
- CUDA: a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream,
  taken from a reusable pool. Nothing is read until ``flush()``, which synchronises once and
  then reads every pair, so timing never adds a synchronisation per phase.

Nesting: one stack shared by all threads, under a lock. The autograd engine may run a phase
(FNGD's weighted sum inside ``backward``) from its own thread while the main thread sits in
``backward``; a per-thread stack would lose that parent. ``end`` removes its own token even
when it is not on top, so overlapping phases from two threads cannot corrupt the stack.

Phases entered outside a step (evaluation, set-up) are not timed: ``begin`` returns ``None``.
The work per phase is a lock, a clock read (or an event record) and a list append.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

__all__ = ["StepTimer"]

# An open phase is a list (cheaper to make than an object): name, parent, step, start, stop.
_NAME, _PARENT, _STEP, _START, _STOP = range(5)


class _Step:
    __slots__ = ("step", "epoch", "warmup", "mode", "start", "stop", "phases", "extra")

    def __init__(self, step: int, epoch: int, warmup: bool, start: Any) -> None:
        self.step = step
        self.epoch = epoch
        self.warmup = warmup
        self.mode: str | None = None
        self.start = start
        self.stop: Any = None
        self.phases: list[list[Any]] = []
        self.extra: dict[str, Any] | None = None


class StepTimer:
    """Times steps and the phases inside them; install with ``fngd.phases.set_recorder``.

    ``device`` is ``"cpu"`` or ``"cuda"`` (or a ``torch.device``); on CUDA the events are
    recorded on the current stream of the current device.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._stack: list[list[Any]] = []
        self._current: _Step | None = None
        self._done: list[_Step] = []
        self._pool: list[Any] = []
        self._mark = self._event if self.cuda else time.perf_counter

    # -- marks -------------------------------------------------------------------------------

    def _event(self) -> Any:
        try:
            event = self._pool.pop()  # atomic; two threads cannot get the same event
        except IndexError:
            event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    # -- PhaseRecorder -----------------------------------------------------------------------

    def begin(self, name: str) -> list[Any] | None:
        step = self._current
        if step is None:
            return None
        stack = self._stack
        self._acquire()  # (bound methods: half the cost of ``with lock``)
        try:
            token = [name, stack[-1][_NAME] if stack else None, step, None, None]
            stack.append(token)
        finally:
            self._release()
        token[_START] = self._mark()
        return token

    def end(self, token: list[Any] | None) -> None:
        if token is None:
            return
        token[_STOP] = self._mark()
        stack = self._stack
        self._acquire()
        try:
            if stack and stack[-1] is token:
                stack.pop()
            else:  # ended out of order (another thread's phase): remove by identity
                for i in range(len(stack) - 1, -1, -1):
                    if stack[i] is token:
                        del stack[i]
                        break
            token[_STEP].phases.append(token)
        finally:
            self._release()

    # -- steps -------------------------------------------------------------------------------

    def start_step(self, step: int, epoch: int, warmup: bool = False) -> None:
        """Open step ``step``; phases begun until ``end_step`` belong to it."""
        with self._lock:
            if self._current is not None:
                raise RuntimeError("start_step called twice without end_step")
            self._current = _Step(step, epoch, warmup, None)
            self._current.start = self._mark()

    def end_step(self, mode: str | None = None, warmup: bool | None = None, **extra: Any) -> None:
        """Close the open step; ``mode`` (and ``warmup`` if given) go on all its records."""
        with self._lock:
            current = self._current
            if current is None:
                raise RuntimeError("end_step called without start_step")
            current.stop = self._mark()
            current.mode = mode
            if warmup is not None:
                current.warmup = warmup
            if extra:
                current.extra = extra
            self._current = None
            self._stack.clear()
            self._done.append(current)

    def discard_step(self) -> None:
        """Drop the open step (the step raised); its events go back to the pool."""
        with self._lock:
            current, self._current = self._current, None
            self._stack.clear()
            if current is not None and self.cuda:
                self._recycle([current])

    @property
    def pending(self) -> int:
        """Steps closed since the last flush."""
        return len(self._done)

    # -- read-out ----------------------------------------------------------------------------

    def _seconds(self, start: Any, stop: Any) -> float:
        if self.cuda:
            return start.elapsed_time(stop) / 1000.0
        return stop - start

    def _recycle(self, steps: list[_Step]) -> None:
        pool = self._pool
        for step in steps:
            for mark in (step.start, step.stop):
                if mark is not None:
                    pool.append(mark)
            for token in step.phases:
                pool.append(token[_START])
                if token[_STOP] is not None:
                    pool.append(token[_STOP])

    def flush(self) -> list[dict[str, Any]]:
        """Synchronise once (CUDA), read every closed step and phase, return their records.

        Each step gives one ``kind="step"`` record followed by its ``kind="phase"`` records
        in the order the phases ended. Fields: ``kind, step, epoch, phase, parent, seconds,
        warmup, mode`` (plus whatever was passed to ``end_step`` as keywords).
        """
        with self._lock:
            done, self._done = self._done, []
        if not done:
            return []
        if self.cuda:
            torch.cuda.synchronize()
        seconds = self._seconds
        out: list[dict[str, Any]] = []
        for st in done:
            common = {"step": st.step, "epoch": st.epoch, "warmup": st.warmup, "mode": st.mode}
            if st.extra:
                common.update(st.extra)
            out.append(
                {
                    "kind": "step",
                    "phase": None,
                    "parent": None,
                    "seconds": seconds(st.start, st.stop),
                    **common,
                }
            )
            for tok in st.phases:
                out.append(
                    {
                        "kind": "phase",
                        "phase": tok[_NAME],
                        "parent": tok[_PARENT],
                        "seconds": seconds(tok[_START], tok[_STOP]),
                        **common,
                    }
                )
        if self.cuda:
            with self._lock:
                self._recycle(done)
        return out
