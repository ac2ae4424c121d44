"""Every hyperparameter's type and range, declared once, and the one checker for them.

The optimiser factory checks every value it is given (``fngd.optimizers.build``), and the
``FNGD`` and ``KFAC`` constructors check their own arguments through the same ``check``, so
a rule lives here only. A mistake is one ``TypeError`` (the wrong kind of value) or
``ValueError`` (out of range) naming the argument and the value given, prefixed by the
optimiser's name where it came from the factory: ``fngd: lr must be a finite number >= 0,
got '0.1' (str)``. Numbers are ``numbers.Real`` (numpy's too) but never ``bool`` or text;
whole numbers are ``numbers.Integral``, never ``2.0``; a flag is a real ``bool``. Damping
is ``fngd.damping``'s to read (a number, a text spec or a schedule).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fngd import damping as damping_mod
from fngd.blocks.native import NATIVE_CHOICES
from fngd.solve import DAMPING_MODES

SHARES = ("none", "sample", "iteration")
SCOPES = ("layer", "network")
REDUCTIONS = ("mean", "sum")
GRAM_CHOICES = ("auto", "pairwise", "explicit")
#: How the inversion phase runs under ``DistributedDataParallel`` (``FNGD``'s ``distributed``).
DISTRIBUTED = ("global", "local")
KFAC_IMPLS = ("builtin", "kfac-pytorch")


@dataclass(frozen=True)
class Rule:
    """One hyperparameter's kind and, for numbers, its bounds (``None``: unbounded).

    kinds: ``real``, ``int``, ``bool``, ``choice``, ``betas`` (two reals), ``damping``,
    ``patterns`` (regular expressions), ``options`` (a mapping of names), ``scaler``
    (``None``, a callable or an object with ``get_scale``), ``dtype`` (a ``torch.dtype``).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False

    def describe(self) -> str:
        what = {
            "real": "a finite number",
            "int": "a whole number",
            "bool": "True or False",
            "choice": f"one of {', '.join(self.choices)}",
            "betas": "two numbers",
            "dtype": "a torch.dtype",
        }.get(self.kind, self.kind)
        what += self._bounds()
        return f"None or {what}" if self.optional else what

    def _bounds(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{low:g}, {high:g}{right}"
        if low is not None:
            return f" {'>' if self.low_open else '>='} {low:g}"
        if high is not None:
            return f" {'<' if self.high_open else '<='} {high:g}"
        return ""

    def in_range(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.kind == "real" and not math.isfinite(value):
            return False
        low, high = self.low, self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return False
        return high is None or (value < high if self.high_open else value <= high)


_FRACTION = Rule("real", 0, 1, high_open=True)
_COUNT = Rule("int", 1)

#: Every hyperparameter of every optimiser (``fngd.optimizers.defaults``) and of the
#: ``FNGD`` and ``KFAC`` constructors, by name.
RULES: dict[str, Rule] = {
    "lr": Rule("real", 0),
    "momentum": _FRACTION,
    "weight_decay": Rule("real", 0),
    "nesterov": Rule("bool"),
    "betas": Rule("betas", 0, 1, high_open=True),
    "eps": Rule("real", 0, low_open=True),
    "impl": Rule("choice", choices=KFAC_IMPLS),
    "damping": Rule("damping"),
    "factor_decay": Rule("real", 0, 1, low_open=True),
    "kl_clip": Rule("real", 0, low_open=True, optional=True),
    "factor_update_steps": _COUNT,
    "inv_update_steps": _COUNT,
    "skip_layers": Rule("patterns"),
    "kfac_pytorch_options": Rule("options"),
    "update_factors_in_hook": Rule("bool"),
    "compute_eigenvalue_outer_product": Rule("bool"),
    "factor_dtype": Rule("dtype", optional=True),
    "inv_dtype": Rule("dtype"),
    "share": Rule("choice", choices=SHARES),
    "scope": Rule("choice", choices=SCOPES),
    "damping_mode": Rule("choice", choices=DAMPING_MODES),
    "normalize": Rule("bool"),
    "grad_scaler": Rule("scaler"),
    "refresh_epochs": Rule("int", 1, optional=True),
    "steps_per_epoch": Rule("int", 1, optional=True),
    "loss_reduction": Rule("choice", choices=REDUCTIONS),
    "gram": Rule("choice", choices=GRAM_CHOICES),
    "check_finite": Rule("bool"),
    "distributed": Rule("choice", choices=DISTRIBUTED),
    "native": Rule("choice", choices=NATIVE_CHOICES),
    # the rivals' (fngd.optimizers.rivals)
    "ns_steps": _COUNT,
    "precondition_frequency": _COUNT,
    "max_precondition_dim": _COUNT,
    "pre_conditioner_update_probability": Rule("real", 0, 1, low_open=True, optional=True),
    "max_size_triangular": _COUNT,
    "r": Rule("real", 0),
    "weight_lr_power": Rule("real", 0),
}


def check(
    name: str,
    value: Any,
    *,
    owner: str | None = None,
    schedule: bool = False,
    positive_damping: bool = False,
) -> Any:
    """``value`` checked against ``RULES[name]``, in its one form (``betas`` a tuple,
    ``skip_layers`` a list of patterns); anything else as given.

    ``owner``: the optimiser's name, to prefix the error; ``schedule``: a callable of the
    step is accepted too (KFAC's numbers, as kfac-pytorch's); ``positive_damping``: damping
    must be > 0 (KFAC's).
    """
    try:
        if schedule and callable(value) and RULES[name].kind in ("real", "int"):
            return value
        return _check(name, RULES[name], value, positive_damping)
    except (TypeError, ValueError) as err:
        if owner is None:
            raise
        raise type(err)(f"{owner}: {err}") from None


def check_all(values: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``check`` for each of ``values``; the checked values by name."""
    return {name: check(name, value, **kwargs) for name, value in values.items()}


def patterns(skip_layers: str | Iterable[str] | None) -> list[str]:
    """``skip_layers`` as a list: one string is one pattern, None none; each compiles."""
    if skip_layers is None:
        return []
    items = [skip_layers] if isinstance(skip_layers, str) else skip_layers
    if not isinstance(items, Iterable) or isinstance(items, (bytes, Mapping)):
        raise TypeError(
            f"skip_layers must be a pattern or a list of patterns, got {_given(skip_layers)}"
        )
    out = list(items)
    for pattern in out:
        if not isinstance(pattern, str):
            raise TypeError(f"skip_layers: a pattern must be a string, got {_given(pattern)}")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(
                f"skip_layers: {pattern!r} is not a regular expression ({err})"
            ) from None
    return out


def _given(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check(name: str, rule: Rule, value: Any, positive_damping: bool) -> Any:
    if value is None and rule.optional:
        return None
    kind = rule.kind
    if kind == "damping":
        damping_mod.resolve(value, positive=positive_damping)
        return value
    if kind == "patterns":
        return patterns(value)
    bad = f"{name} must be {rule.describe()}, got {_given(value)}"
    if kind in ("real", "int"):
        if not (_is_int(value) if kind == "int" else _is_real(value)):
            raise TypeError(bad)
        if not rule.in_range(float(value)):
            raise ValueError(bad)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(bad)
        return value
    if kind == "choice":
        if not isinstance(value, str):
            raise TypeError(bad)
        if value not in rule.choices:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(rule.choices)}")
        return value
    if kind == "betas":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise TypeError(bad)
        pair = tuple(value)
        if len(pair) != 2 or not all(_is_real(v) for v in pair):
            raise TypeError(bad)
        if not all(rule.in_range(float(v)) for v in pair):
            raise ValueError(bad)
        return pair
    if kind == "options":
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError(f"{name} must be a mapping of setting names, got {_given(value)}")
        return dict(value)
    if kind == "scaler":
        if value is None or callable(value) or hasattr(value, "get_scale"):
            return value
        raise TypeError(
            f"{name} must be None, a GradScaler or a callable returning the loss scale, "
            f"got {_given(value)}"
        )
    if kind == "dtype":
        if not isinstance(value, torch.dtype):
            raise TypeError(bad)
        return value
    raise AssertionError(f"no rule kind {kind!r}")  # a rule declared wrongly above
