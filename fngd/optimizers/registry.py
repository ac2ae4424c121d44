"""The optimiser registry: every family's name, where it came from, and its spec.

Names are the entry points of group ``fngd_bench.optimizers`` (the suite's own from its
``pyproject.toml``, a plugin's from its distribution) or references (``pkg.mod:attr``,
``path/to/file.py:attr``), named by their own text. Listing names imports nothing; ``get``
imports the one asked for. Torch-free.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fngd.optimizers.plugins import (
    OPTIMIZER_GROUP,
    PluginError,
    Registration,
    discover,
    is_reference,
    reference,
)
from fngd.optimizers.spec import OptimizerSpec, as_spec

__all__ = ["Loaded", "get", "is_known", "names", "registration"]


@dataclass(frozen=True)
class Loaded:
    """A family's registration and its spec."""

    registration: Registration
    spec: OptimizerSpec

    @property
    def name(self) -> str:
        return self.registration.name


def names() -> list[str]:
    """The registered family names, the suite's own first."""
    return list(discover(OPTIMIZER_GROUP))


def registration(name: str) -> Registration:
    """Where ``name`` comes from; an unknown name is a ``PluginError`` listing the known."""
    if is_reference(name):
        return reference(name, OPTIMIZER_GROUP)
    found = discover(OPTIMIZER_GROUP)
    if name not in found:
        raise PluginError(
            f"unknown optimizer {name!r}; valid names: {', '.join(found)} "
            "(or a reference, module:function or path/to/file.py:function)"
        )
    return found[name]


def is_known(name: str) -> bool:
    """A registered name or a reference (not loaded: ``get`` says whether it works)."""
    return is_reference(name) or name in discover(OPTIMIZER_GROUP)


@functools.cache
def get(name: str) -> Loaded:
    """Family ``name`` loaded: its spec, checked against the contract."""
    entry = registration(name)
    obj = entry.load()
    try:
        spec = as_spec(obj, entry.what())
    except TypeError as exc:
        raise PluginError(str(exc)) from None
    return Loaded(registration=entry, spec=spec)
