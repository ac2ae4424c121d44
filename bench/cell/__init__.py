"""One cell (a workload, an optimizer label, a seed): its spec and build, the training loop
and step, phase timers, learning-rate schedules, the staleness probe.

The names callers need are here; each lives in one module: ``spec`` (what a cell is),
``build`` (``build_cell``, ``record_base``), ``loop`` (``run_steps``, the one training loop),
``runner`` (``run_cell``: a cell trained and recorded), ``step``, ``timing``, ``schedules``,
``staleness``.
"""

from bench.cell.build import build_cell, record_base
from bench.cell.loop import run_steps
from bench.cell.runner import run_cell
from bench.cell.spec import WARMUP_STEPS, Cell, CellSpec, LoopState, WorkloadFactory

__all__ = [
    "WARMUP_STEPS",
    "Cell",
    "CellSpec",
    "LoopState",
    "WorkloadFactory",
    "build_cell",
    "record_base",
    "run_cell",
    "run_steps",
]
