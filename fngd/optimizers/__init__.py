"""The optimiser factory: ``build(name, model, **hparams) -> BenchOptimizer``."""

from fngd.optimizers.base import BenchOptimizer
from fngd.optimizers.defaults import DEFAULTS
from fngd.optimizers.factory import build, names

__all__ = ["DEFAULTS", "BenchOptimizer", "build", "names"]
