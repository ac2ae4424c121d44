"""``fngd-bench profile``: a torch.profiler trace of each phase of one optimiser, for TensorBoard.

``profile_run`` builds the cell as the runner does (``bench.cell.build.build_cell``: label,
hyperparameters, ``steps_per_epoch``, replay of the first epoch), trains it through the
runner's loop (``bench.cell.loop.run_steps``, untimed) under ``torch.profiler.profile`` with one
``prof.step()`` per training step (so ``ProfilerStep#N`` is training step ``N``), and records
a window of steps chosen so that every mode of the optimiser is in it:

- FNGD (``fngd``, ``fngd-iter``): epoch 0 runs in full (its steps invert: Gram and solve)
  and the window covers its last steps and the first steps of epoch 1 (weighted sums);
- KFAC: the window holds a step whose index is a multiple of ``inv_update_steps`` (inverse
  update) and steps that are not (``inverse`` / ``no_inverse``);
- SGD, AdamW, NGD (one mode): the window starts after a few warm-up steps.

Epochs cut short by ``max_steps_per_epoch`` replay the sample order of the first epoch (the
runner's rule), so that FNGD with ``share="sample"`` finds a stored coefficient for every
sample of every batch of epoch 1; a step's cost does not depend on which samples it draws.
The mode and warm-up flag of each step come from the runner's loop.

The trace goes to ``OUT/<workload>/<optimizer>/<host>_<pid>.<timestamp>.pt.trace.json``
(TensorBoard: ``tensorboard --logdir OUT``), replacing earlier traces there. It is then read
back (``bench.measure.trace_summary``) into ``profile`` records in
``OUT/<workload>/<optimizer>/profile.jsonl``: per profiled step and phase, ``cpu_time`` and
(on CUDA) ``gpu_time`` in seconds and ``count`` (calls), with the step's ``mode``, ``epoch``,
``warmup`` and the enclosing phase in ``parent``; records with ``phase`` null hold the whole
step (the ``ProfilerStep#N`` range and the kernels launched in it). Summed over a run they
give the per-phase totals the report shows.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.cell import (
    WARMUP_STEPS,
    CellSpec,
    WorkloadFactory,
    build_cell,
    record_base,
    run_steps,
)
from bench.cell.spec import file_safe
from bench.cell.timing import NullTimer
from bench.host.env import resolve_device
from bench.measure import trace_summary
from bench.records import RecordWriter

__all__ = [
    "DEFAULT_MAX_STEPS_PER_EPOCH",
    "DEFAULT_STEPS",
    "OPEN_PREFIX",
    "PERFETTO_URL",
    "ProfileResult",
    "Window",
    "expected_modes",
    "format_table",
    "main",
    "plan_window",
    "profile_run",
    "summary_records",
]

DEFAULT_STEPS = 10
#: Where the trace file opens without TensorBoard (PyTorch's own recommendation for it).
PERFETTO_URL = "https://ui.perfetto.dev"
#: The last line of a profile's output starts with this, then the command that opens it.
OPEN_PREFIX = "open it (then the PyTorch Profiler tab): "
#: Epochs of a profile are cut to this many steps (FNGD's first epoch runs in full).
DEFAULT_MAX_STEPS_PER_EPOCH = 50
#: Steps before the window of one-mode optimisers: the runner's warm-up steps.
MIN_START = WARMUP_STEPS
#: Profiler warm-up steps (traced, then discarded) before the window.
PROFILER_WARMUP = 1
RECORDS_NAME = "profile.jsonl"


# -- the window ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Steps ``start .. start + active - 1`` are recorded; ``warmup`` steps before them are
    traced and discarded (the profiler's own warm-up)."""

    start: int
    active: int
    note: str = ""

    @property
    def warmup(self) -> int:
        return min(PROFILER_WARMUP, self.start)

    @property
    def total(self) -> int:
        """Training steps to run: the window ends the run."""
        return self.start + self.active

    @property
    def steps(self) -> range:
        return range(self.start, self.total)

    def schedule(self) -> Callable[[int], Any]:
        return torch.profiler.schedule(
            wait=self.start - self.warmup, warmup=self.warmup, active=self.active, repeat=1
        )


def _inv_update_steps(opt: Any) -> int | None:
    value = (getattr(opt, "hparams", None) or {}).get("inv_update_steps")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _fngd_shares(opt: Any) -> bool:
    """FNGD that stores coefficients (not ``share="none"``: exact NGD, one mode)."""
    if getattr(opt, "name", None) != "fngd":
        return False
    share = getattr(getattr(opt, "preconditioner", None), "share", None)
    if share is None:
        share = (getattr(opt, "hparams", None) or {}).get("share", "sample")
    return share != "none"


def expected_modes(opt: Any) -> tuple[str, ...]:
    """The modes a window should show for ``opt`` (empty: one-mode optimiser)."""
    if _fngd_shares(opt):
        return ("inversion", "weighted_sum")
    if getattr(opt, "name", None) == "kfac" and (_inv_update_steps(opt) or 0) > 1:
        return ("inverse", "no_inverse")
    return ()


def plan_window(opt: Any, steps_per_epoch: int, steps: int = DEFAULT_STEPS) -> Window:
    """The steps to record so that every mode of ``opt`` is in the window (module docstring)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    modes = expected_modes(opt)
    if modes and steps < 2:
        raise ValueError(
            f"{opt.name} has two modes ({' / '.join(modes)}): profile at least 2 steps"
        )
    before = max(1, steps // 2)
    if modes and modes[0] == "inversion":
        before = min(before, max(1, steps_per_epoch - 1))
        start = max(0, steps_per_epoch - before)
        note = (
            f"steps {start}..{start + before - 1}: end of epoch 0 (inversion), "
            f"{steps_per_epoch}..{start + steps - 1}: start of epoch 1 (weighted sum)"
        )
        return Window(start, steps, note)
    if modes and modes[0] == "inverse":
        k = _inv_update_steps(opt) or 1
        target = k * math.ceil((MIN_START + before) / k)
        start = target - before
        return Window(start, steps, f"inverse update at step {target} (every {k} steps)")
    return Window(MIN_START, steps, f"after {MIN_START} warm-up steps")


# -- the run ------------------------------------------------------------------------------------


@dataclass
class ProfileResult:
    run_dir: Path
    traces: list[Path]
    records_path: Path
    window: Window
    modes: dict[int, Any]  # training step -> opt.mode after it (every step run)
    summary: trace_summary.TraceSummary
    warmups: dict[int, bool] = field(default_factory=dict)  # training step -> warm-up flag
    records: list[dict[str, Any]] = field(default_factory=list)
    workload: str = ""
    optimizer: str = ""
    device: str = "cpu"
    missing_modes: tuple[str, ...] = ()
    stopped: str = ""  # why training stopped before the window's end, if it did

    @property
    def complete(self) -> bool:
        """The whole window was traced and read back, with every expected mode."""
        return (
            not self.stopped
            and not self.missing_modes
            and self.summary.step_numbers == list(self.window.steps)
        )


def _clear_previous(run_dir: Path) -> None:
    """A profile replaces the previous one in its directory (traces and records)."""
    for p in trace_summary.trace_files(run_dir):
        p.unlink()
    records = run_dir / RECORDS_NAME
    if records.exists():
        records.unlink()


def _activities(device: torch.device) -> list[torch.profiler.ProfilerActivity]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda" and torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def profile_run(
    workload: str,
    optimizer: str,
    out_dir: str | os.PathLike[str] = "runs",
    device: str | torch.device = "auto",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    *,
    size: str = "small",
    batch_size: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    max_steps_per_epoch: int | None = DEFAULT_MAX_STEPS_PER_EPOCH,
    overrides: Mapping[str, Any] | None = None,
    use_gzip: bool = False,
    workload_factory: WorkloadFactory | None = None,
) -> ProfileResult:
    """Profile ``steps`` training steps of ``workload`` with optimiser label ``optimizer``.

    Writes the trace and ``profile.jsonl`` to ``out_dir/<workload>/<optimizer>`` (module
    docstring; each name made file-safe, so that a reference such as ``/abs/tasks.py:build``
    stays inside ``out_dir``) and returns what was written. ``max_steps_per_epoch`` (None:
    whole epochs) cuts each epoch, ``overrides`` are hyperparameters on top of the workload's,
    ``workload_factory`` replaces ``bench.workloads.get``. Training that diverges
    (``FloatingPointError``) ends the run early; ``result.stopped`` says so.
    """
    if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
        raise ValueError(f"max_steps_per_epoch must be at least 1, got {max_steps_per_epoch}")
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    spec = CellSpec(
        workload,
        optimizer,
        seed,
        overrides=dict(overrides or {}),
        max_steps_per_epoch=max_steps_per_epoch,
        batch_size=batch_size,
        size=size,
    )
    cell = build_cell(spec, dev, data_root=data_root, workload_factory=workload_factory)
    wl, opt, per_epoch = cell.workload, cell.opt, cell.steps_per_epoch
    loader = wl.train_loader
    if per_epoch < 1:
        raise RuntimeError(f"{workload}: the train loader gives no batch")
    window = plan_window(opt, per_epoch, steps)

    run_dir = Path(out_dir) / file_safe(workload) / file_safe(optimizer)
    run_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(run_dir)

    modes: dict[int, Any] = {}
    warmups: dict[int, bool] = {}
    epochs: dict[int, int] = {}
    stopped = ""
    state = cell.loop_state()
    loss_sum = torch.zeros((), device=dev)
    epoch = 0
    handler = torch.profiler.tensorboard_trace_handler(str(run_dir), use_gzip=use_gzip)
    opt.optimizer.zero_grad(set_to_none=True)
    wl.model.train()
    with torch.profiler.profile(
        activities=_activities(dev),
        schedule=window.schedule(),
        on_trace_ready=handler,
        record_shapes=True,
        profile_memory=True,
        with_stack=False,
    ) as prof:

        def on_step(step: int, mode: Any, warmup: bool) -> None:
            modes[step], warmups[step], epochs[step] = mode, warmup, epoch
            prof.step()

        while state.step < window.total and not stopped:
            if cell.replay:
                loader.set_epoch(0)
            batches = iter(loader)
            first = state.step
            try:
                run_steps(
                    wl,
                    opt,
                    batches,
                    min(per_epoch, window.total - state.step),
                    timer=NullTimer(),
                    epoch=epoch,
                    state=state,
                    device=dev,
                    loss_sum=loss_sum,
                    on_step=on_step,
                )
            except FloatingPointError as exc:  # an optimiser's finiteness check
                stopped = f"step {state.step}: {type(exc).__name__}: {exc}"
            finally:
                del batches
            if state.step == first and not stopped:
                raise RuntimeError(f"{workload}: the train loader gave no batch")
            epoch += 1

    traces = trace_summary.trace_files(run_dir)
    if not traces:
        raise RuntimeError(f"no trace was written to {run_dir} ({stopped or 'no active step'})")
    summaries = [trace_summary.summarize_file(p) for p in traces]
    summary = _merge(summaries)

    seen = {modes.get(n) for n in summary.step_numbers}
    missing = tuple(m for m in expected_modes(opt) if m not in seen)

    base = record_base(
        spec,
        dev,
        cell,
        run_id=f"{spec.run_id}__profile",
        steps_per_epoch=per_epoch,
        replay_first_epoch=cell.replay,
    )
    step_traces = {st.step: Path(t.path or "").name for t in summaries for st in t.steps}
    records = summary_records(summary, modes, epochs, warmups=warmups, step_traces=step_traces)
    path = run_dir / RECORDS_NAME
    with RecordWriter(path, base) as writer:
        writer.write_many(records, flush=True)
    return ProfileResult(
        run_dir=run_dir,
        traces=traces,
        records_path=path,
        window=window,
        modes=modes,
        warmups=warmups,
        summary=summary,
        records=[{**base, **r} for r in records],
        workload=workload,
        optimizer=optimizer,
        device=dev.type,
        missing_modes=missing,
        stopped=stopped,
    )


def _merge(summaries: list[trace_summary.TraceSummary]) -> trace_summary.TraceSummary:
    """One summary of several traces (one per schedule cycle); steps keep their numbers."""
    if len(summaries) == 1:
        return summaries[0]
    steps = sorted((s for t in summaries for s in t.steps), key=lambda s: s.step)
    return trace_summary.TraceSummary(
        steps=steps,
        has_gpu=any(t.has_gpu for t in summaries),
        kernels=sum(t.kernels for t in summaries),
        unattributed_gpu_time=sum(t.unattributed_gpu_time for t in summaries),
        fallback_kernels=sum(t.fallback_kernels for t in summaries),
        path=", ".join(str(t.path) for t in summaries),
    )


def summary_records(
    summary: trace_summary.TraceSummary,
    modes: Mapping[int, Any],
    epochs: Mapping[int, int] | None = None,
    *,
    warmups: Mapping[int, bool] | None = None,
    step_traces: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """``profile`` records of a summary: per step, one set for the whole step (``phase``
    null) and one per (phase, parent); ``gpu_time`` only when the trace has kernels.
    ``modes``, ``epochs`` and ``warmups`` map a training step to what the runner's loop
    said of it (a step missing from ``warmups`` is not warm-up).
    """
    epochs = epochs or {}
    warmups = warmups or {}
    step_traces = step_traces or {}
    now = time.time()
    out: list[dict[str, Any]] = []
    for s in summary.steps:
        mode = modes.get(s.step)
        common = {
            "kind": "profile",
            "epoch": epochs.get(s.step),
            "step": s.step,
            "mode": mode,
            "warmup": warmups.get(s.step, False),
            "trace": step_traces.get(s.step),
            "time": now,
        }
        values: list[tuple[str | None, str | None, str, float]] = [
            (None, None, "cpu_time", s.cpu_time)
        ]
        if summary.has_gpu:
            values.append((None, None, "gpu_time", s.gpu_time))
        for (name, parent), p in s.phases.items():
            values.append((name, parent, "cpu_time", p.cpu_time))
            if summary.has_gpu:
                values.append((name, parent, "gpu_time", p.gpu_time))
            values.append((name, parent, "count", p.count))
        for ph, parent, key, value in values:
            out.append({**common, "phase": ph, "parent": parent, "name": key, "value": value})
    return out


# -- output -------------------------------------------------------------------------------------


def format_table(result: ProfileResult) -> str:
    """Per mode and phase: calls and mean CPU (and GPU) milliseconds per step."""
    s = result.summary
    modes = result.modes
    traced = s.step_numbers
    order: list[Any] = []
    for n in traced:
        if modes.get(n) not in order:
            order.append(modes.get(n))
    by_mode = ", ".join(
        f"{m if m is not None else 'steps'} {sum(modes.get(n) == m for n in traced)}" for m in order
    )
    lines = [
        f"profile {result.workload} / {result.optimizer} on {result.device}: "
        f"{len(traced)} steps traced ({by_mode}); {result.window.note}",
    ]
    gpu = s.has_gpu
    header = f"{'mode':<13} {'phase':<19} {'calls':>6} {'CPU ms/step':>12}"
    if gpu:
        header += f" {'GPU ms/step':>12}"
    lines += [header, "-" * len(header)]
    for m in order:
        steps = [st for st in s.steps if modes.get(st.step) == m]
        n = len(steps)
        label = str(m) if m is not None else "-"
        row = f"{label:<13} {'(step)':<19} {n:>6} {1e3 * sum(x.cpu_time for x in steps) / n:>12.3f}"
        if gpu:
            row += f" {1e3 * sum(x.gpu_time for x in steps) / n:>12.3f}"
        lines.append(row)
        totals = s.totals(modes, m)
        for name in s.phase_names():
            if name not in totals:
                continue
            t = totals[name]
            row = f"{label:<13} {name:<19} {t.count:>6} {1e3 * t.cpu_time / n:>12.3f}"
            if gpu:
                row += f" {1e3 * t.gpu_time / n:>12.3f}"
            lines.append(row)
    if gpu and s.unattributed_gpu_time > 0:
        lines.append(f"GPU kernel time outside any step: {1e3 * s.unattributed_gpu_time:.3f} ms")
    lines.append("phase times are inclusive (a phase nested in another counts in both)")
    if result.missing_modes:
        lines.append(f"warning: no step of mode {', '.join(result.missing_modes)} was traced")
    if result.stopped:
        lines.append(f"warning: training stopped early ({result.stopped})")
    lines.append(f"records: {result.records_path}")
    lines.append(
        f"trace: {', '.join(str(p) for p in result.traces)} "
        f"(Chrome trace format: also opens in Perfetto, {PERFETTO_URL})"
    )
    lines.append(f"{OPEN_PREFIX}tensorboard --logdir {result.run_dir.parent.parent}")
    return "\n".join(lines)


def main(
    *,
    workload: str,
    optimizer: str,
    out: str | os.PathLike[str] = "runs",
    device: str = "auto",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    size: str = "small",
    batch_size: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    max_steps_per_epoch: int | None = DEFAULT_MAX_STEPS_PER_EPOCH,
) -> int:
    """``fngd-bench profile``: profile, print the table; 0 if the whole window was traced
    with every mode."""
    result = profile_run(
        workload,
        optimizer,
        out_dir=out,
        device=device,
        steps=steps,
        seed=seed,
        size=size,
        batch_size=batch_size,
        data_root=data_root,
        max_steps_per_epoch=max_steps_per_epoch,
    )
    print(format_table(result))
    return 0 if result.complete else 1
