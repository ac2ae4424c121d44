"""The suite's own optimiser families, registered as entry points of ``fngd-bench``
(``pyproject.toml``, group ``fngd_bench.optimizers``) like any plugin's: SGD, AdamW, KFAC
(built in, or kfac-pytorch's), exact NGD and FNGD, each with its defaults
(``fngd.optimizers.defaults``), its hyperparameter checks (``fngd.hparams``) and what
``fngd-bench tune`` searches.

What ``fngd-bench tune`` searches, per family. Every family gets the same number of trials
(the budget, ``--trials``); what differs is only which hyperparameters exist for it. Ranges
are wide enough to hold every workload's hand-set values (``bench/workloads/*``) with room
on both sides:

| hyperparameter    | families             | distribution                          |
| ----------------- | -------------------- | ------------------------------------- |
| `lr`              | sgd, kfac, ngd, fngd | log-uniform 1e-3 .. 1                 |
| `lr`              | adamw                | log-uniform 1e-4 .. 1e-1              |
| `weight_decay`    | sgd, kfac, ngd, fngd | log-uniform 1e-6 .. 1e-2              |
| `weight_decay`    | adamw                | log-uniform 1e-5 .. 1 (decoupled)     |
| `damping`         | kfac, ngd, fngd      | log-uniform 1e-4 .. 1                 |
| `warmup_fraction` | all                  | uniform 0 .. 0.2 (of all steps)       |

Everything else (momentum 0.9, the schedule's shape, KFAC's inverse period, FNGD's
sharing) is fixed by the optimiser label and the workload. The spaces have no conditions,
as Optuna's quasi-random ``QMCSampler`` requires.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from fngd import damping
from fngd import hparams as hparams_mod
from fngd.optimizers import defaults
from fngd.optimizers.base import BenchOptimizer, Preconditioner
from fngd.optimizers.factory import PRECONDITIONED
from fngd.optimizers.spec import OptimizerSpec, Range

__all__ = ["ADAMW", "FNGD", "KFAC", "KFAC_IMPLS", "NGD", "OPTIMIZER_KEYS", "SGD"]

OPTIMIZER_KEYS = {
    "sgd": ("lr", "momentum", "weight_decay", "nesterov"),
    "adamw": ("lr", "betas", "eps", "weight_decay"),
}
KFAC_IMPLS = hparams_mod.KFAC_IMPLS


def _sgd(model: nn.Module, hp: dict[str, Any]) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), **{k: hp[k] for k in OPTIMIZER_KEYS["sgd"]})


def build_sgd(model: nn.Module, **hp: Any) -> BenchOptimizer:
    return BenchOptimizer("sgd", _sgd(model, hp), hparams=hp)


def build_adamw(model: nn.Module, **hp: Any) -> BenchOptimizer:
    opt = torch.optim.AdamW(model.parameters(), **{k: hp[k] for k in OPTIMIZER_KEYS["adamw"]})
    return BenchOptimizer("adamw", opt, hparams=hp)


def _fngd_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    skip = set(OPTIMIZER_KEYS["sgd"])
    return {k: v for k, v in hp.items() if k not in skip}


def _fngd_record(hp: dict[str, Any], pre: Any) -> dict[str, Any]:
    """The hyperparameters as records keep them: a damping schedule as its spec string,
    a loss scaler by its type's name (a callable: its name), whether the compiled
    blocks ran ("on"/"off", not "auto"), and the preconditioned share of the trainable
    numbers (``coverage()``), which every FNGD figure is read beside."""
    scaler = hp["grad_scaler"]
    if scaler is not None:
        scaler = getattr(scaler, "__name__", None) or type(scaler).__name__
    return {
        **hp,
        "damping": damping.describe(hp["damping"]),
        "grad_scaler": scaler,
        "native": pre.native,
        PRECONDITIONED: pre.coverage().fraction,
    }


def build_fngd(model: nn.Module, **hp: Any) -> BenchOptimizer:
    from fngd.preconditioner import FNGD

    pre = FNGD(model, **_fngd_kwargs(hp))
    return BenchOptimizer(
        "fngd", _sgd(model, hp), impl="builtin", hparams=_fngd_record(hp, pre), preconditioner=pre
    )


def build_ngd(model: nn.Module, **hp: Any) -> BenchOptimizer:
    from fngd.preconditioner import FNGD

    pre = FNGD(model, share="none", **_fngd_kwargs(hp))
    return BenchOptimizer(
        "ngd",
        _sgd(model, hp),
        impl="builtin",
        hparams={**_fngd_record(hp, pre), "share": "none"},
        preconditioner=pre,
    )


def build_kfac(model: nn.Module, **hp: Any) -> BenchOptimizer:
    impl = hp["impl"]
    kfac_hp = {
        k: hp[k]
        for k in (
            "lr",
            "damping",
            "factor_decay",
            "kl_clip",
            "factor_update_steps",
            "inv_update_steps",
            "skip_layers",
        )
    }
    options = dict(hp["kfac_pytorch_options"] or {})
    if impl == "builtin":
        from fngd.kfac import KFAC

        if options:
            raise ValueError(
                "kfac_pytorch_options are kfac-pytorch's own settings: they need "
                "impl='kfac-pytorch'"
            )
        pre: Preconditioner = KFAC(model, **kfac_hp)
    elif impl == "kfac-pytorch":
        from fngd.adapters import kfac_pytorch

        pre = kfac_pytorch.make_preconditioner(model, **kfac_hp, **options)
    else:
        raise ValueError(f"unknown KFAC impl {impl!r}; valid: {', '.join(KFAC_IMPLS)}")
    record = {**hp, "damping": damping.describe(hp["damping"])}  # as FNGD's records keep it
    coverage = getattr(pre, "coverage", None)  # kfac-pytorch's own preconditioner has none
    if coverage is not None:
        record[PRECONDITIONED] = coverage().fraction
    return BenchOptimizer("kfac", _sgd(model, hp), impl=impl, hparams=record, preconditioner=pre)


_SGD_LIKE = {"lr": Range(1e-3, 1.0), "weight_decay": Range(1e-6, 1e-2)}
_DAMPING = {"damping": Range(1e-4, 1.0)}
_WARMUP = {"warmup_fraction": Range(0.0, 0.2, log=False)}


def _check(family: str, hp: dict[str, Any]) -> dict[str, Any]:
    return hparams_mod.check_all(hp, owner=family, positive_damping=family == "kfac")


def _spec(family: str, factory: Any, space: dict[str, Range], note: str) -> OptimizerSpec:
    return OptimizerSpec(
        factory=factory,
        defaults=defaults.DEFAULTS[family],
        space=space,
        note=note,
        check=partial(_check, family),
    )


SGD = _spec("sgd", build_sgd, {**_SGD_LIKE, **_WARMUP}, "SGD with momentum (torch.optim.SGD)")
ADAMW = _spec(
    "adamw",
    build_adamw,
    {"lr": Range(1e-4, 1e-1), "weight_decay": Range(1e-5, 1.0), **_WARMUP},
    "AdamW (torch.optim.AdamW)",
)
KFAC = _spec(
    "kfac", build_kfac, {**_SGD_LIKE, **_DAMPING, **_WARMUP}, "KFAC (built in or kfac-pytorch)"
)
NGD = _spec("ngd", build_ngd, {**_SGD_LIKE, **_DAMPING, **_WARMUP}, "exact NGD (N x N solve)")
FNGD = _spec("fngd", build_fngd, {**_SGD_LIKE, **_DAMPING, **_WARMUP}, "FNGD")
