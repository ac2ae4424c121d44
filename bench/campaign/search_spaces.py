"""What ``fngd-bench tune`` searches, per optimiser family, in one readable place.

Every family gets the same number of trials (the budget, ``--trials``); what differs is
only which hyperparameters exist for it. Ranges are wide enough to hold every workload's
hand-set values (``bench/workloads/*``) with room on both sides:

| hyperparameter    | families             | distribution                          |
| ----------------- | -------------------- | ------------------------------------- |
| `lr`              | sgd, kfac, ngd, fngd | log-uniform 1e-3 .. 1                 |
| `lr`              | adamw                | log-uniform 1e-4 .. 1e-1              |
| `weight_decay`    | sgd, kfac, ngd, fngd | log-uniform 1e-6 .. 1e-2              |
| `weight_decay`    | adamw                | log-uniform 1e-5 .. 1 (decoupled)     |
| `damping`         | kfac, ngd, fngd      | log-uniform 1e-4 .. 1                 |
| `warmup_fraction` | all                  | uniform 0 .. 0.2 (of all steps)       |

Everything else (momentum 0.9, the schedule's shape, KFAC's inverse period, FNGD's
sharing) is fixed by the optimiser label and the workload. The space has no conditions,
as Optuna's quasi-random ``QMCSampler`` requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

__all__ = ["SPACES", "Range", "space_for", "suggest"]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = True


_SGD_LIKE = {"lr": Range(1e-3, 1.0), "weight_decay": Range(1e-6, 1e-2)}
_DAMPING = {"damping": Range(1e-4, 1.0)}
_WARMUP = {"warmup_fraction": Range(0.0, 0.2, log=False)}

#: family -> {hyperparameter: range}
SPACES: dict[str, dict[str, Range]] = {
    "sgd": {**_SGD_LIKE, **_WARMUP},
    "adamw": {"lr": Range(1e-4, 1e-1), "weight_decay": Range(1e-5, 1.0), **_WARMUP},
    "kfac": {**_SGD_LIKE, **_DAMPING, **_WARMUP},
    "ngd": {**_SGD_LIKE, **_DAMPING, **_WARMUP},
    "fngd": {**_SGD_LIKE, **_DAMPING, **_WARMUP},
}


def space_for(family: str) -> dict[str, Range]:
    try:
        return SPACES[family]
    except KeyError:
        raise KeyError(f"no search space for {family!r}; spaces: {', '.join(SPACES)}") from None


def suggest(trial: optuna.Trial, family: str) -> dict[str, Any]:
    """The trial's hyperparameters for ``family``, drawn by the study's sampler."""
    return {
        name: trial.suggest_float(name, r.low, r.high, log=r.log)
        for name, r in space_for(family).items()
    }
