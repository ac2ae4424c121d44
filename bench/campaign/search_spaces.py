"""What ``fngd-bench tune`` searches: each optimiser family's ``space``, drawn by a trial.

The spaces belong to the families' specs (``fngd.optimizers.OptimizerSpec.space``; the
suite's own ranges and why: ``fngd.optimizers.builtin``), so that a plugin's optimiser is
tuned exactly like the suite's own, with the same budget of trials. A family without a
space cannot be tuned, and says so.
"""

from __future__ import annotations

from typing import Any

import optuna

from fngd.optimizers import registry
from fngd.optimizers.spec import Range

__all__ = ["Range", "space_for", "suggest"]


def space_for(family: str) -> dict[str, Range]:
    """``family``'s search space; none is a ``ValueError`` naming the family."""
    loaded = registry.get(family)
    if not loaded.spec.space:
        raise ValueError(
            f"no search space for {family!r} ({loaded.registration.origin}): give its "
            "OptimizerSpec a space={name: Range(low, high)} to tune it"
        )
    return dict(loaded.spec.space)


def suggest(trial: optuna.Trial, family: str) -> dict[str, Any]:
    """The trial's hyperparameters for ``family``, drawn by the study's sampler."""
    return {
        name: trial.suggest_float(name, r.low, r.high, log=r.log)
        for name, r in space_for(family).items()
    }
