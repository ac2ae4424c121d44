"""``build(name, model, **hparams)``: every optimiser family behind one call, the suite's own
and plugins' alike (``fngd.optimizers.registry``)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from fngd.optimizers.base import BenchOptimizer
from fngd.optimizers.plugins import PluginError
from fngd.optimizers.registry import Loaded, get
from fngd.optimizers.registry import names as registered_names

__all__ = ["PRECONDITIONED", "build", "names", "resolve"]

#: The records' key for the preconditioned share of the trainable numbers (0 to 1).
PRECONDITIONED = "preconditioned"
#: What a preconditioner returned by a plugin's factory must have (the runner drives these).
PRECONDITIONER_METHODS = ("prepare", "step", "memory_usage", "state_dict", "load_state_dict")


def names() -> list[str]:
    return registered_names()


def resolve(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Family ``name``'s defaults updated by ``hparams``, checked: an unknown hyperparameter
    is a ``ValueError`` listing the valid ones."""
    spec = get(name).spec
    unknown = sorted(set(hparams) - set(spec.defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for {name!r}; "
            f"valid: {', '.join(spec.defaults) or 'none'}"
        )
    resolved = {**spec.defaults, **hparams}
    return spec.check(resolved) if spec.check is not None else resolved


def build(name: str, model: nn.Module, **hparams: Any) -> BenchOptimizer:
    """Build optimiser ``name`` for ``model``; unknown names or hyperparameters fail clearly."""
    family = get(name)
    hp = resolve(name, hparams)
    return _wrap(family, family.spec.factory(model, **hp), hp)


def _wrap(family: Loaded, made: Any, hp: dict[str, Any]) -> BenchOptimizer:
    """A factory's result as the runner drives it: a ``BenchOptimizer`` as it is, an
    optimiser alone, or a (preconditioner, optimiser) pair; anything else names the plugin."""
    if isinstance(made, BenchOptimizer):
        return made
    what = family.registration.what()
    pre = None
    if isinstance(made, tuple) and len(made) == 2:
        pre, made = made
        missing = [m for m in PRECONDITIONER_METHODS if not callable(getattr(pre, m, None))]
        if missing:
            raise PluginError(
                f"{what}: its preconditioner {type(pre).__name__} lacks {', '.join(missing)}"
            )
    if not isinstance(made, torch.optim.Optimizer):
        raise PluginError(
            f"{what}: its factory returned {type(made).__name__}; expected a "
            "torch.optim.Optimizer or a (preconditioner, optimizer) pair"
        )
    record = dict(hp)
    coverage = getattr(pre, "coverage", None)
    if callable(coverage):
        record[PRECONDITIONED] = coverage().fraction
    return BenchOptimizer(
        family.name,
        made,
        impl=family.registration.origin,  # its distribution and version, or "reference"
        hparams=record,
        preconditioner=_Adapted(pre) if pre is not None else None,
    )


def _takes_ids(method: Any) -> bool:
    """Whether ``method`` accepts ``sample_ids=`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the surface
        return True
    return any(p.name == "sample_ids" or p.kind is p.VAR_KEYWORD for p in params)


class _Adapted:
    """A plugin's preconditioner with the optional parts of the surface filled in (no
    phases of its own, no per-sample loss weights, ``mode`` None); a ``prepare`` or
    ``step`` without ``sample_ids`` (kfac-pytorch's ``step()``) is called without them."""

    def __init__(self, pre: Any) -> None:
        self._pre = pre
        self._ids = {name: _takes_ids(getattr(pre, name)) for name in ("prepare", "step")}

    @property
    def mode(self) -> str | None:
        return getattr(self._pre, "mode", None)

    @property
    def phases(self) -> tuple[str, ...]:
        return tuple(getattr(self._pre, "phases", ()))

    def prepare(self, sample_ids: torch.Tensor | None = None) -> None:
        if self._ids["prepare"]:
            self._pre.prepare(sample_ids=sample_ids)
        else:
            self._pre.prepare()

    def reweight(self, sample_ids: torch.Tensor | None = None) -> bool:
        fn = getattr(self._pre, "reweight", None)
        return bool(fn(sample_ids)) if fn is not None else False

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        return self._pre.reweighted_loss(losses)

    def loss_weights(self, sample_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        fn = getattr(self._pre, "loss_weights", None)
        return fn(sample_ids=sample_ids) if fn is not None else None

    def step(self, sample_ids: torch.Tensor | None = None) -> None:
        if self._ids["step"]:
            self._pre.step(sample_ids=sample_ids)
        else:
            self._pre.step()

    def memory_usage(self) -> dict[str, int]:
        return dict(self._pre.memory_usage())

    def state_dict(self) -> dict[str, Any]:
        return self._pre.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pre.load_state_dict(state)

    def coverage(self) -> Any:
        return self._pre.coverage()
