"""FNGD (Fast Natural Gradient Descent), exact NGD, a built-in KFAC and the optimizer factory."""

from __future__ import annotations

from typing import Any

__all__ = ["FNGD", "KFAC", "build"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that importing ``fngd.phases`` does not pull in every optimiser.
    if name == "FNGD":
        from fngd.preconditioner import FNGD

        return FNGD
    if name == "KFAC":
        from fngd.kfac import KFAC

        return KFAC
    if name == "build":
        from fngd.optimizers import build

        return build
    raise AttributeError(f"module 'fngd' has no attribute {name!r}")
