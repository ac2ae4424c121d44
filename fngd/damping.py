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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Damping = float | Callable[[int], float]


@dataclass(frozen=True)
class Geometric:
    """From ``start`` at step 0 to ``end`` at step ``steps`` geometrically, then ``end``."""

    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        if self.start <= 0 or self.end <= 0 or self.steps < 1:
            raise ValueError(f"geometric damping needs start, end > 0 and steps >= 1: {self}")

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
        if self.start < 0 or self.factor <= 0 or self.every < 1:
            raise ValueError(f"step damping needs start >= 0, factor > 0, every >= 1: {self}")

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


def resolve(damping: float | str | Callable[[int], float]) -> Damping:
    """What ``FNGD`` keeps: a non-negative float, or a schedule (a callable of the step)."""
    if isinstance(damping, str):
        damping = parse(damping)
    if callable(damping):
        return damping
    value = float(damping)
    if value < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    return value


def at(damping: Damping, step: int) -> float:
    """The damping in force at ``step``."""
    return float(damping(step)) if callable(damping) else damping


def describe(damping: float | str | Callable[[int], float]) -> float | str:
    """How records keep ``damping``: a float as is, a schedule as its spec string."""
    if isinstance(damping, str):
        resolved = parse(damping)
        return resolved if isinstance(resolved, float) else spec_of(resolved)
    if callable(damping):
        return spec_of(damping)
    return damping


def spec_of(schedule: Callable[[int], float]) -> str:
    return str(getattr(schedule, "spec", None) or repr(schedule))
