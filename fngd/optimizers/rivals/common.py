"""What every rival shares: the lazy import of its library, the search space, the check."""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import partial
from types import ModuleType
from typing import Any

from fngd import hparams as hparams_mod
from fngd.optimizers.plugins import PluginError
from fngd.optimizers.spec import OptimizerSpec, Range

__all__ = ["INSTALL", "SPACE", "impl", "library", "rival"]

#: What to install for every rival at once (``pyproject.toml``'s ``rivals`` extra).
INSTALL = "pip install 'fngd-bench[rivals]'"

#: AdamW's space (``fngd.optimizers.builtin``): every rival is scaled like Adam (Muon through
#: its AdamW-matched update size), so one range serves all, and the budget is equal.
SPACE: dict[str, Range] = {
    "lr": Range(1e-4, 1e-1),
    "weight_decay": Range(1e-5, 1.0),
    "warmup_fraction": Range(0.0, 0.2, log=False),
}


def library(module: str, family: str, package: str) -> ModuleType:
    """``module`` imported, or a ``PluginError`` naming ``family`` and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(
            f"{family} needs the {package} package, which is not installed ({exc}); "
            f"install it: {INSTALL}"
        ) from None


def impl(package: str) -> str:
    """What the records' ``impl`` says: the library and its version (``schedulefree 1.4.1``)."""
    return f"{package} {importlib.metadata.version(package)}"


def _check(family: str, hp: dict[str, Any]) -> dict[str, Any]:
    return hparams_mod.check_all(hp, owner=family)


def rival(family: str, factory: Any, defaults: dict[str, Any], note: str) -> OptimizerSpec:
    """A rival's spec: ``SPACE`` to tune, ``fngd.hparams``' rules to check."""
    return OptimizerSpec(
        factory=factory, defaults=defaults, space=SPACE, note=note, check=partial(_check, family)
    )
