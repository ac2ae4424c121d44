"""Read a torch.profiler Chrome trace back into per-step, per-phase CPU and GPU time.

The trace is the ``*.pt.trace.json`` (or ``.json.gz``) file that
``torch.profiler.tensorboard_trace_handler`` writes. Only its ``"ph": "X"`` events are used:

- *steps*: the ``ProfilerStep#N`` ranges that ``profiler.step()`` opens (category
  ``user_annotation``; ``cpu_op`` in old traces). ``N`` is the number of ``step()`` calls
  before the step, so with one ``step()`` per training step ``N`` is the training step index.
- *phases*: the ``user_annotation`` ranges named like a phase of ``fngd.phases`` (each
  ``fngd.phases.phase(name)`` is a ``record_function`` range). A range belongs to the step
  whose range contains its start; ranges on other threads (autograd's device threads run
  the backward pass on CUDA) are placed by time like the others. Its *parent* is the
  innermost other phase range that contains it in time (FNGD's weighted sum inside
  ``backward``).
- *CPU time* of a phase: the sum of its ranges' durations (inclusive of nested phases).
- *GPU time* of a phase: the sum of the durations of the GPU kernels (category ``kernel``;
  memory copies and memsets are not counted) *launched* while one of its ranges was open.
  A kernel is tied to its launch (the ``cuda_runtime`` / ``cuda_driver`` call, e.g.
  ``cudaLaunchKernel``) by the CUPTI ``correlation`` id both events carry, and the launch's
  timestamp is looked up in the CPU-side phase ranges of the same process. This does not
  depend on when the kernel ran: a kernel queued during ``forward`` that runs while the host
  is already in ``backward`` still counts for ``forward``, and kernels of other streams that
  overlap in time are not mixed in. A kernel whose launch is not in the trace falls back to
  the GPU-side ``gpu_user_annotation`` ranges (the device-side span Kineto draws for each
  annotated range) that contain it; what neither method places is reported as
  ``unattributed_gpu_time``. Like CPU time, GPU time is inclusive (a kernel launched in
  FNGD's weighted sum inside ``backward`` counts for both), and it is a sum of kernel
  durations, not GPU wall time: kernels overlapping on several streams add up.

Traces without kernel events (CPU-only profiles) have ``has_gpu`` false and no GPU time.
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fngd.phases import ALL as PHASES

__all__ = [
    "PHASES",
    "STEP_PREFIX",
    "PhaseStats",
    "StepStats",
    "TraceSummary",
    "load_trace",
    "summarize",
    "summarize_file",
    "trace_files",
]

STEP_PREFIX = "ProfilerStep#"
TRACE_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")
_US = 1e-6  # trace timestamps and durations are in microseconds
_TOL = 0.01  # microseconds of slack for float rounding in containment tests
_RANGE_CATS = ("user_annotation", "cpu_op")
_GPU_RANGE_CAT = "gpu_user_annotation"
_KERNEL_CAT = "kernel"
_DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset", "memcpy", "memset", _GPU_RANGE_CAT)

PhaseKey = tuple[str, str | None]  # (phase, parent phase or None)


@dataclass
class PhaseStats:
    """One phase (under one parent) in one step; times in seconds."""

    cpu_time: float = 0.0
    gpu_time: float = 0.0
    count: int = 0


@dataclass
class StepStats:
    """One ``ProfilerStep#N``: its own CPU (range) and GPU (kernel) time, and its phases."""

    step: int
    cpu_time: float
    gpu_time: float = 0.0
    phases: dict[PhaseKey, PhaseStats] = field(default_factory=dict)

    def phase_totals(self) -> dict[str, PhaseStats]:
        """This step's phases summed over parents."""
        out: dict[str, PhaseStats] = {}
        for (name, _), s in self.phases.items():
            t = out.setdefault(name, PhaseStats())
            t.cpu_time += s.cpu_time
            t.gpu_time += s.gpu_time
            t.count += s.count
        return out


@dataclass
class TraceSummary:
    """What ``summarize`` reads from one trace."""

    steps: list[StepStats]
    has_gpu: bool
    kernels: int = 0
    unattributed_gpu_time: float = 0.0  # kernels placed in no step (seconds)
    fallback_kernels: int = 0  # kernels placed by GPU-side annotation, not by launch
    path: str | None = None

    @property
    def step_numbers(self) -> list[int]:
        return [s.step for s in self.steps]

    def phase_names(self) -> list[str]:
        """Phases seen, in ``fngd.phases`` order."""
        seen = {name for s in self.steps for name, _ in s.phases}
        return [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))

    def totals(
        self, modes: Mapping[int, Any] | None = None, mode: Any = None
    ) -> dict[str, PhaseStats]:
        """Phases summed over steps (and parents); only the steps of ``mode`` if
        ``modes`` (step -> mode) is given."""
        out: dict[str, PhaseStats] = {}
        for s in self.steps:
            if modes is not None and modes.get(s.step) != mode:
                continue
            for name, t in s.phase_totals().items():
                o = out.setdefault(name, PhaseStats())
                o.cpu_time += t.cpu_time
                o.gpu_time += t.gpu_time
                o.count += t.count
        return out


# -- files --------------------------------------------------------------------------------------


def trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The trace files directly in ``directory``, oldest first (by modification time)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    files = [p for p in d.iterdir() if p.is_file() and p.name.endswith(TRACE_SUFFIXES)]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def load_trace(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a trace file, gzipped or not (told apart by the gzip magic)."""
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener: Any = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, list):  # the bare-array form of the Chrome trace format
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise ValueError(f"{path}: not a Chrome trace (no traceEvents list)")
    return data


def summarize_file(path: str | os.PathLike[str], phases: Iterable[str] = PHASES) -> TraceSummary:
    summary = summarize(load_trace(path), phases)
    summary.path = str(path)
    return summary


# -- the summary --------------------------------------------------------------------------------


@dataclass
class _Range:
    name: str
    start: float  # microseconds
    end: float
    pid: Any
    parent: str | None = None
    gpu: float = 0.0  # microseconds of kernels attributed


def _cat(event: Mapping[str, Any]) -> str:
    return str(event.get("cat") or "").lower()


def _span(event: Mapping[str, Any]) -> tuple[float, float] | None:
    try:
        start = float(event["ts"])
        dur = float(event.get("dur") or 0.0)
    except (KeyError, TypeError, ValueError):
        return None
    return start, start + max(dur, 0.0)


def _step_number(name: str) -> int | None:
    try:
        return int(name[len(STEP_PREFIX) :])
    except ValueError:
        return None


def _is_launch(cat: str) -> bool:
    return cat not in _DEVICE_CATS and ("runtime" in cat or "driver" in cat)


def _contains(outer: _Range, start: float, end: float) -> bool:
    return outer.start - _TOL <= start and end <= outer.end + _TOL


def summarize(trace: Mapping[str, Any], phases: Iterable[str] = PHASES) -> TraceSummary:
    """Per-step, per-phase CPU and GPU time of a loaded trace (see the module docstring)."""
    wanted = set(phases)
    events = [e for e in trace.get("traceEvents", []) if isinstance(e, dict) and e.get("ph") == "X"]

    steps: dict[int, _Range] = {}
    ranges: list[_Range] = []
    gpu_ranges: list[_Range] = []
    launches: dict[Any, tuple[float, Any]] = {}  # correlation -> (launch ts, pid)
    kernels: list[tuple[float, float, Any]] = []  # (start, end, correlation)
    for e in events:
        cat = _cat(e)
        name = str(e.get("name", ""))
        span = _span(e)
        if span is None:
            continue
        if cat in _RANGE_CATS:
            if name.startswith(STEP_PREFIX):
                n = _step_number(name)
                if n is not None and n not in steps:
                    steps[n] = _Range(name, *span, e.get("pid"))
            elif name in wanted:
                ranges.append(_Range(name, *span, e.get("pid")))
        elif cat == _GPU_RANGE_CAT:
            if name.startswith(STEP_PREFIX) or name in wanted:
                gpu_ranges.append(_Range(name, *span, e.get("pid")))
        elif cat == _KERNEL_CAT:
            kernels.append((*span, (e.get("args") or {}).get("correlation")))
        elif _is_launch(cat):
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                launches[corr] = (span[0], e.get("pid"))

    order = sorted(steps)
    step_ranges = sorted((steps[n] for n in order), key=lambda r: r.start)
    step_starts = [r.start for r in step_ranges]
    number_of = {id(r): n for n, r in steps.items()}

    def step_at(t: float) -> _Range | None:
        i = bisect.bisect_right(step_starts, t + _TOL) - 1
        if i >= 0 and t <= step_ranges[i].end + _TOL:
            return step_ranges[i]
        return None

    # Phase ranges by step, and each one's parent (innermost enclosing phase range).
    by_step: dict[int, list[_Range]] = {n: [] for n in order}
    for r in ranges:
        s = step_at(r.start)
        if s is not None:
            by_step[number_of[id(s)]].append(r)
    for members in by_step.values():
        for r in members:
            best: _Range | None = None
            for q in members:
                if q is r or not _contains(q, r.start, r.end):
                    continue
                if (q.end - q.start) < (r.end - r.start) or (
                    (q.end - q.start) == (r.end - r.start) and q.start >= r.start
                ):
                    continue  # not strictly larger: r cannot be inside q
                if best is None or (q.end - q.start) < (best.end - best.start):
                    best = q
            r.parent = best.name if best is not None else None

    # GPU kernels: by the launch's correlation id, else by GPU-side annotation ranges.
    step_gpu = {n: 0.0 for n in order}
    unattributed = 0.0
    fallback = 0
    gpu_by_step_name = _gpu_ranges_by_step(gpu_ranges)
    for k_start, k_end, corr in kernels:
        dur = k_end - k_start
        launch = launches.get(corr) if corr is not None else None
        if launch is not None:
            t, pid = launch
            s = step_at(t)
            if s is not None:
                n = number_of[id(s)]
                step_gpu[n] += dur
                for r in by_step[n]:
                    if r.pid == pid and r.start - _TOL <= t <= r.end + _TOL:
                        r.gpu += dur
                continue
        placed = _place_on_device(k_start, k_end, dur, gpu_by_step_name, by_step, step_gpu)
        if placed:
            fallback += 1
        else:
            unattributed += dur

    out: list[StepStats] = []
    for n in order:
        s = steps[n]
        stats = StepStats(step=n, cpu_time=(s.end - s.start) * _US, gpu_time=step_gpu[n] * _US)
        for r in sorted(by_step[n], key=lambda r: r.start):
            p = stats.phases.setdefault((r.name, r.parent), PhaseStats())
            p.cpu_time += (r.end - r.start) * _US
            p.gpu_time += r.gpu * _US
            p.count += 1
        out.append(stats)
    return TraceSummary(
        steps=out,
        has_gpu=bool(kernels),
        kernels=len(kernels),
        unattributed_gpu_time=unattributed * _US,
        fallback_kernels=fallback,
    )


def _gpu_ranges_by_step(gpu_ranges: list[_Range]) -> list[tuple[int, _Range, list[_Range]]]:
    """GPU-side ``ProfilerStep#N`` spans, each with the GPU-side phase spans inside it."""
    step_spans = [r for r in gpu_ranges if r.name.startswith(STEP_PREFIX)]
    phase_spans = [r for r in gpu_ranges if not r.name.startswith(STEP_PREFIX)]
    out = []
    for s in step_spans:
        n = _step_number(s.name)
        if n is None:
            continue
        inside = [r for r in phase_spans if r.pid == s.pid and _contains(s, r.start, r.end)]
        out.append((n, s, inside))
    return out


def _place_on_device(
    k_start: float,
    k_end: float,
    dur: float,
    gpu_by_step: list[tuple[int, _Range, list[_Range]]],
    by_step: dict[int, list[_Range]],
    step_gpu: dict[int, float],
) -> bool:
    """Fallback: credit a kernel to the GPU-side spans containing it; True if placed."""
    for n, span, inside in gpu_by_step:
        if n not in step_gpu or not _contains(span, k_start, k_end):
            continue
        step_gpu[n] += dur
        names = {r.name for r in inside if _contains(r, k_start, k_end)}
        # Credit the first CPU-side range of each such phase in this step (the trace
        # cannot tell which call of a repeated phase ran the kernel).
        for name in names:
            for r in by_step.get(n, []):
                if r.name == name:
                    r.gpu += dur
                    break
        return True
    return False
