"""The optimiser factory: ``build(name, model, **hparams) -> BenchOptimizer``, over every
registered family (the suite's own and plugins', ``fngd.optimizers.registry``)."""

from fngd.optimizers.base import BenchOptimizer, Preconditioner
from fngd.optimizers.defaults import DEFAULTS
from fngd.optimizers.factory import build, names
from fngd.optimizers.plugins import PluginError
from fngd.optimizers.spec import OptimizerSpec, Range

__all__ = [
    "DEFAULTS",
    "BenchOptimizer",
    "OptimizerSpec",
    "PluginError",
    "Preconditioner",
    "Range",
    "build",
    "names",
]
