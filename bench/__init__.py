"""fngd-bench: the command line (``bench.cli``) and the Python API (``bench.api``).

``bench.compare``, ``bench.load`` and ``bench.report`` are :mod:`bench.api`'s, imported
when first used, so that ``import bench`` (and every ``bench.*`` import) stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["compare", "load", "report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
