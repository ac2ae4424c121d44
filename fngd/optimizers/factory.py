"""``build(name, model, **hparams)``: every optimiser of the suite behind one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fngd import damping
from fngd import hparams as hparams_mod
from fngd.optimizers.base import BenchOptimizer, Preconditioner
from fngd.optimizers.defaults import DEFAULTS

OPTIMIZER_KEYS = {
    "sgd": ("lr", "momentum", "weight_decay", "nesterov"),
    "adamw": ("lr", "betas", "eps", "weight_decay"),
}
KFAC_IMPLS = hparams_mod.KFAC_IMPLS
#: The records' key for the preconditioned share of the trainable numbers (0 to 1).
PRECONDITIONED = "preconditioned"


def names() -> list[str]:
    return list(DEFAULTS)


def _resolve(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    if name not in DEFAULTS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(DEFAULTS)}")
    defaults = DEFAULTS[name]
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for {name!r}; "
            f"valid: {', '.join(defaults)}"
        )
    resolved = {**defaults, **hparams}
    return hparams_mod.check_all(resolved, owner=name, positive_damping=name == "kfac")


def _sgd(model: nn.Module, hp: dict[str, Any]) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), **{k: hp[k] for k in OPTIMIZER_KEYS["sgd"]})


def _build_sgd(model: nn.Module, hp: dict[str, Any]) -> BenchOptimizer:
    return BenchOptimizer("sgd", _sgd(model, hp), hparams=hp)


def _build_adamw(model: nn.Module, hp: dict[str, Any]) -> BenchOptimizer:
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


def _build_fngd(model: nn.Module, hp: dict[str, Any]) -> BenchOptimizer:
    from fngd.preconditioner import FNGD

    pre = FNGD(model, **_fngd_kwargs(hp))
    return BenchOptimizer(
        "fngd", _sgd(model, hp), impl="builtin", hparams=_fngd_record(hp, pre), preconditioner=pre
    )


def _build_ngd(model: nn.Module, hp: dict[str, Any]) -> BenchOptimizer:
    from fngd.preconditioner import FNGD

    pre = FNGD(model, share="none", **_fngd_kwargs(hp))
    return BenchOptimizer(
        "ngd",
        _sgd(model, hp),
        impl="builtin",
        hparams={**_fngd_record(hp, pre), "share": "none"},
        preconditioner=pre,
    )


def _build_kfac(model: nn.Module, hp: dict[str, Any]) -> BenchOptimizer:
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


BUILDERS: dict[str, Callable[[nn.Module, dict[str, Any]], BenchOptimizer]] = {
    "sgd": _build_sgd,
    "adamw": _build_adamw,
    "kfac": _build_kfac,
    "ngd": _build_ngd,
    "fngd": _build_fngd,
}


def build(name: str, model: nn.Module, **hparams: Any) -> BenchOptimizer:
    """Build optimiser ``name`` for ``model``; unknown names or hyperparameters fail clearly."""
    hp = _resolve(name, hparams)
    return BUILDERS[name](model, hp)
