"""What an optimiser registers: :class:`OptimizerSpec`, its factory, defaults and search space.

The contract (docs/PLUGINS.md): ``factory(model, **hparams)`` returns a
``torch.optim.Optimizer``, or a ``(preconditioner, optimizer)`` pair (kfac-pytorch's
pattern, :class:`fngd.optimizers.base.Preconditioner`), or a ready
:class:`~fngd.optimizers.base.BenchOptimizer` (the suite's own). ``defaults`` names every
hyperparameter the factory takes, with its value; a run may override only those. ``space``
is what ``fngd-bench tune`` searches (optional: without one the optimiser is run, not tuned).
A plain function ``(model, lr=..., ...)`` registers too: its keyword defaults are its
``defaults``; so does a ``torch.optim.Optimizer`` class (``torch.optim:NAdam``), built on
the model's parameters with its constructor's defaults. Torch-free (a class alone imports
torch), so that a plugin's registration can be read before torch loads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = ["OptimizerSpec", "Range", "as_spec"]


@dataclass(frozen=True)
class Range:
    """A tuned hyperparameter's range: log-uniform (``log``) or uniform in ``[low, high]``."""

    low: float
    high: float
    log: bool = True

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(
                f"Range: need low < high (and low > 0 on a log scale), got "
                f"low={self.low}, high={self.high}, log={self.log}"
            )


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimiser family: how to build it, with what by default, and what to tune.

    ``note`` is its line in ``fngd-bench list``. ``check`` (optional) validates the merged
    hyperparameters and returns them (the suite's own use ``fngd.hparams``).
    """

    factory: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    space: Mapping[str, Range] = field(default_factory=dict)
    note: str = ""
    check: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise TypeError(f"OptimizerSpec: factory must be callable, got {self.factory!r}")
        if not isinstance(self.defaults, Mapping):
            raise TypeError(f"OptimizerSpec: defaults must be a mapping, got {self.defaults!r}")
        for name, value in self.space.items():
            if not isinstance(value, Range):
                raise TypeError(f"OptimizerSpec: space[{name!r}] must be a Range, got {value!r}")


def as_spec(obj: object, what: str) -> OptimizerSpec:
    """``obj`` as an :class:`OptimizerSpec`: itself, or a plain factory function whose
    keyword defaults are the hyperparameters. Anything else is a ``TypeError`` naming
    ``what``."""
    if isinstance(obj, OptimizerSpec):
        return obj
    if isinstance(obj, type) and _is_optimizer_class(obj):
        return _from_class(obj)
    if callable(obj) and not isinstance(obj, type):
        params = list(inspect.signature(obj).parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not params or params[0].kind not in positional:
            raise TypeError(f"{what}: a factory takes the model first, got {obj!r}")
        defaults = {
            p.name: p.default
            for p in params[1:]
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        doc = inspect.getdoc(obj) or ""
        return OptimizerSpec(factory=obj, defaults=defaults, note=doc.split("\n", 1)[0])
    raise TypeError(
        f"{what}: expected an fngd.optimizers.OptimizerSpec, a factory function "
        f"(model, **hparams) or a torch.optim.Optimizer class, got {obj!r:.80}"
    )


def _is_optimizer_class(cls: type) -> bool:
    import torch  # only for a class: a spec or a function is read without torch

    return issubclass(cls, torch.optim.Optimizer)


def _from_class(cls: type) -> OptimizerSpec:
    """A ``torch.optim.Optimizer`` class (``torch.optim:NAdam``, ``pytorch_optimizer:Lion``)
    as a family: built on the model's parameters, its constructor's keyword defaults its
    defaults."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, params
    defaults = {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    doc = inspect.getdoc(cls) or ""
    note = f"{cls.__module__}.{cls.__qualname__}" + (f": {doc.splitlines()[0]}" if doc else "")
    return OptimizerSpec(factory=partial(_build_from_class, cls), defaults=defaults, note=note)


def _build_from_class(cls: type, model: Any, **hparams: Any) -> Any:
    return cls(model.parameters(), **hparams)
