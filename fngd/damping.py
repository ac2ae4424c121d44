"""Damping as a number or a schedule of the step index, and its one-line text form.

``FNGD(damping=...)`` takes a float (constant), a callable ``f(step: int) -> float``
(kfac-pytorch's convention for callable hyperparameters; ``step`` is the preconditioner's
step count when it solves) or a text spec, so presets and the command line can pass a
schedule as a plain value and records keep it as a string:

- ``"0.01"``                      constant 0.01
- ``"geometric:START:END:STEPS"`` ``START * (END / START) ** (min(step, STEPS) / STEPS)``:
  from START at step 0 to END at step STEPS, then END
- ``"step:START:FACTOR:EVERY"``   ``START * FACTOR ** (step // EVERY)``

``Geometric`` and ``Step`` are the schedules behind the specs; their ``spec`` gives it back.
The one parser for FNGD, NGD and the built-in KFAC (``resolve``; the kfac-pytorch adapter
hands kfac-pytorch the resolved schedule). A damping is finite and >= 0 (KFAC: > 0, as its
eigenvalue division needs): a constant when it is given, a schedule's value at each step it
is asked for (``at``); anything else is one ``ValueError`` naming ``damping`` and the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Damping = float | Callable[[int], float]
DampingSpec = float | str | Callable[[int], float]


@dataclass(frozen=True)
class Geometric:
    """From ``start`` at step 0 to ``end`` at step ``steps`` geometrically, then ``end``."""

    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        if not (0 < self.start < math.inf and 0 < self.end < math.inf and self.steps >= 1):
            raise ValueError(
                f"geometric damping needs start, end > 0 (finite) and steps >= 1: {self}"
            )

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.steps) / self.steps
        return self.start * (self.end / self.start) ** t

    @property
    def spec(self) -> str:
        return f"geometric:{self.start!r}:{self.end!r}:{self.steps}"


@dataclass(frozen=True)
class Step:
    """``start`` multiplied by ``factor`` every ``every`` steps."""

    start: float
    factor: float
    every: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < math.inf and 0 < self.factor < math.inf and self.every >= 1):
            raise ValueError(
                f"step damping needs start >= 0, factor > 0 (finite) and every >= 1: {self}"
            )

    def __call__(self, step: int) -> float:
        return self.start * self.factor ** (max(step, 0) // self.every)

    @property
    def spec(self) -> str:
        return f"step:{self.start!r}:{self.factor!r}:{self.every}"


def parse(spec: str) -> Damping:
    """A float or a schedule from its text form (see the module docstring)."""
    kind, _, rest = spec.strip().partition(":")
    args = rest.split(":") if rest else []
    try:
        if not args:
            return float(kind)
        if kind == "geometric" and len(args) == 3:
            return Geometric(float(args[0]), float(args[1]), int(args[2]))
        if kind == "step" and len(args) == 3:
            return Step(float(args[0]), float(args[1]), int(args[2]))
    except ValueError as err:
        raise ValueError(f"bad damping spec {spec!r}: {err}") from None
    raise ValueError(
        f"bad damping spec {spec!r}; valid: a number, 'geometric:START:END:STEPS', "
        "'step:START:FACTOR:EVERY'"
    )


def resolve(damping: DampingSpec, *, positive: bool = False) -> Damping:
    """What a preconditioner keeps: a checked float, or a schedule (a callable of the step).

    ``positive``: the damping must be > 0, not only >= 0 (KFAC's).
    """
    if isinstance(damping, str):
        damping = parse(damping)
    if callable(damping):
        return damping
    try:
        if isinstance(damping, bool):
            raise TypeError
        value = float(damping)
    except (TypeError, ValueError):
        raise TypeError(
            "damping: expected a number, a schedule f(step) -> float or a text spec, got "
            f"{damping!r}"
        ) from None
    return _checked(value, positive)


def at(damping: Damping, step: int, *, positive: bool = False) -> float:
    """The damping in force at ``step``; a schedule's value is checked as a constant is."""
    if not callable(damping):
        return damping
    return _checked(float(damping(step)), positive, f" (the schedule's value at step {step})")


def _checked(value: float, positive: bool, where: str = "") -> float:
    if positive:
        if not 0 < value < math.inf:
            raise ValueError(f"damping must be finite and > 0, got {value!r}{where}")
    elif not 0 <= value < math.inf:
        raise ValueError(f"damping must be finite and >= 0, got {value!r}{where}")
    return value


def describe(damping: DampingSpec) -> float | str:
    """How records keep ``damping``: a float as is, a schedule as its spec string."""
    if isinstance(damping, str):
        resolved = parse(damping)
        return resolved if isinstance(resolved, float) else spec_of(resolved)
    if callable(damping):
        return spec_of(damping)
    return damping


def spec_of(schedule: Callable[[int], float]) -> str:
    return str(getattr(schedule, "spec", None) or repr(schedule))
