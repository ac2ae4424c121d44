"""Phase and step timers: the ``fngd.phases.PhaseRecorder`` the runner installs.

``StepTimer`` groups every phase entered between ``start_step`` and ``end_step`` under that
step and hands back one ``step`` record per step at ``flush()`` (the runner calls it once per
epoch): the whole step's time and its phases' (``bench.records``: seconds per ``phase_key``,
summed over the phase's entries in the step).

- CPU: ``time.perf_counter`` at ``begin`` and ``end``.
- CUDA: a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream,
  taken from a reusable pool. Nothing is read until ``flush()``, which synchronises once and
  then reads every pair, so timing never adds a synchronisation per phase.

Nesting: one global, ordered log per step. ``begin`` appends its token, ``end`` stamps it
and appends it again, so the log is the sequence of phase entries and exits across all
threads; ``flush`` replays it through one stack to find each phase's ``parent``. The
autograd engine may run a phase (FNGD's weighted sum inside ``backward``) from its own thread
while the main thread sits in ``backward``: its entry lands between ``backward``'s entry and
exit, so its parent is ``backward`` (a per-thread stack would lose that). ``list.append`` is
atomic, so the hot path takes no lock; the replay removes an exit's token from the stack by
identity even when it is not on top, so phases of two threads that overlap cannot corrupt
the nesting. A phase entered several times in a step (KFAC's factors in every layer's hooks,
FNGD's weighted sum per block) is summed per ``(parent, name)``: one number per phase key.

Phases entered outside a step (evaluation, set-up) are not timed: ``begin`` returns ``None``.
The work per phase is two clock reads (or event records), a small list and two appends;
everything else waits for ``flush``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.records import phase_key

__all__ = ["NullTimer", "StepTimer"]

# A phase token is a list (cheaper to make than an object): name, start, stop, its step's log.
_NAME, _START, _STOP, _LOG = range(4)


class _Step:
    __slots__ = ("step", "epoch", "warmup", "mode", "start", "stop", "log")

    def __init__(self, step: int, epoch: int, warmup: bool, start: Any) -> None:
        self.step = step
        self.epoch = epoch
        self.warmup = warmup
        self.start = start
        self.log: list[list[Any]] = []


class StepTimer:
    """Times steps and the phases inside them; install with ``fngd.phases.set_recorder``.

    ``device`` is ``"cpu"`` or ``"cuda"`` (or a ``torch.device``); on CUDA the events are
    recorded on the current stream of the current device.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._current: _Step | None = None
        self._log: list[list[Any]] | None = None  # the open step's log
        self._done: list[_Step] = []
        self._pool: list[Any] = []
        self._mark = self._event if self.cuda else time.perf_counter

    # -- marks -------------------------------------------------------------------------------

    def _event(self) -> Any:
        try:
            event = self._pool.pop()  # atomic: two threads never get the same event
        except IndexError:
            event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    # -- PhaseRecorder -----------------------------------------------------------------------

    def begin(self, name: str) -> list[Any] | None:
        log = self._log
        if log is None:
            return None
        token = [name, None, None, log]
        log.append(token)
        token[_START] = self._mark()
        return token

    def end(self, token: list[Any] | None) -> None:
        if token is not None:
            token[_STOP] = self._mark()
            token[_LOG].append(token)

    # -- steps -------------------------------------------------------------------------------

    def start_step(self, step: int, epoch: int, warmup: bool = False) -> None:
        """Open step ``step``; phases begun until ``end_step`` belong to it."""
        if self._current is not None:
            raise RuntimeError("start_step called twice without end_step")
        current = self._current = _Step(step, epoch, warmup, self._mark())
        self._log = current.log

    def end_step(self, mode: str | None = None, warmup: bool | None = None) -> None:
        """Close the open step; ``mode`` (and ``warmup`` if given) go on all its records."""
        stop = self._mark()
        current = self._current
        if current is None:
            raise RuntimeError("end_step called without start_step")
        self._log = self._current = None
        current.stop = stop
        current.mode = mode
        if warmup is not None:
            current.warmup = warmup
        self._done.append(current)

    def discard_step(self) -> None:
        """Drop the open step (the step raised); its events go back to the pool."""
        current, self._current, self._log = self._current, None, None
        if current is not None:
            if self.cuda:
                self._recycle([current])
            current.log.clear()

    @property
    def pending(self) -> int:
        """Steps closed since the last flush."""
        return len(self._done)

    # -- read-out ----------------------------------------------------------------------------

    def _recycle(self, steps: list[_Step]) -> None:
        pool = self._pool
        for step in steps:
            marks = [step.start, step.stop]
            for token in step.log:
                marks.append(token[_START])
                marks.append(token[_STOP])
            seen: set[int] = set()  # a token is in the log twice
            for mark in marks:
                if mark is not None and id(mark) not in seen:
                    seen.add(id(mark))
                    pool.append(mark)

    def flush(self) -> list[dict[str, Any]]:
        """Synchronise once (CUDA), read every closed step and phase, return their records.

        One ``kind="step"`` record per step, in order: ``step, epoch, seconds`` (the whole
        step), ``warmup, mode``, ``phases`` (``{phase_key(name, parent): seconds}``, in the
        order the phases first ended, each summed over its entries) and ``phase_count``
        (the phase intervals timed).
        """
        done, self._done = self._done, []
        if not done:
            return []
        if self.cuda:
            torch.cuda.synchronize()

            def seconds(start: Any, stop: Any) -> float:
                return start.elapsed_time(stop) / 1000.0

        else:

            def seconds(start: Any, stop: Any) -> float:
                return stop - start

        keys: dict[tuple[str, str | None], str] = {}  # (name, parent) -> phase key
        out: list[dict[str, Any]] = []
        for st in done:
            stack: list[list[Any]] = []
            parents: dict[int, str | None] = {}
            phases: dict[str, float] = {}
            count = 0
            for token in st.log:
                ident = id(token)
                if ident not in parents:  # entry
                    parents[ident] = stack[-1][_NAME] if stack else None
                    stack.append(token)
                    continue
                if stack and stack[-1] is token:  # exit
                    stack.pop()
                else:
                    for i in range(len(stack) - 1, -1, -1):
                        if stack[i] is token:
                            del stack[i]
                            break
                pair = (token[_NAME], parents[ident])
                key = keys.get(pair)
                if key is None:
                    key = keys[pair] = phase_key(*pair)
                phases[key] = phases.get(key, 0.0) + seconds(token[_START], token[_STOP])
                count += 1
            out.append(
                {
                    "kind": "step",
                    "step": st.step,
                    "epoch": st.epoch,
                    "seconds": seconds(st.start, st.stop),
                    "warmup": st.warmup,
                    "mode": st.mode,
                    "phases": phases,
                    "phase_count": count,
                }
            )
        if self.cuda:
            self._recycle(done)
        for st in done:
            st.log.clear()  # tokens point back at their log: break the cycle now
        return out


class NullTimer:
    """A ``StepTimer`` that times nothing: the training loop with timing switched off.

    The overhead measurement runs the same loop with this and with a ``StepTimer``, and the
    profiler (whose trace is the measurement) runs it with this.
    """

    def begin(self, name: str) -> None:
        return None

    def end(self, token: None) -> None:
        pass

    def start_step(self, step: int, epoch: int, warmup: bool = False) -> None:
        pass

    def end_step(self, mode: str | None = None, warmup: bool | None = None) -> None:
        pass

    def discard_step(self) -> None:
        pass

    def flush(self) -> list[dict[str, Any]]:
        return []
