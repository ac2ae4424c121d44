"""The workload registry: every workload's name, where it came from, and ``get``.

Names are the entry points of group ``fngd_bench.workloads`` (the suite's own from its
``pyproject.toml``, a plugin's from its distribution: ``fngd.optimizers.plugins``) or
references, ``pkg.mod:build`` / ``path/to/file.py:build``, named by their own text. A name
ending in ``*`` is a family of names (``mlp-random-*``: ``mlp-random-128``); it is not a
training workload and so not in ``names()``.

Each one points at ``build(*, device, seed, batch_size, data_root, size) -> Workload`` (the
contract: docs/PLUGINS.md); a build that also takes ``name`` is told the name it was asked
for. Its line in ``fngd-bench list`` is its ``description`` attribute, else the first line
of its docstring. Listing names imports nothing; ``get`` imports the one asked for.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import torch

from bench.workloads.common import check_size
from bench.workloads.workload import Workload, check_workload
from fngd.optimizers.plugins import (
    WORKLOAD_GROUP,
    PluginError,
    Registration,
    discover,
    is_reference,
    reference,
)

__all__ = [
    "describe",
    "descriptions",
    "family",
    "get",
    "is_registered",
    "names",
    "registration",
    "registrations",
]

#: The mark of a family of names in an entry point's name.
FAMILY_MARK = "*"


def registrations() -> dict[str, Registration]:
    """Every registered name (families as ``prefix*``), the suite's own first."""
    return dict(discover(WORKLOAD_GROUP))


def names() -> list[str]:
    """The registered training workloads (families left out)."""
    return [n for n in registrations() if not n.endswith(FAMILY_MARK)]


def family(name: str) -> str | None:
    """The family prefix ``name`` belongs to (``mlp-random-`` for ``mlp-random-128``)."""
    prefixes = [n[: -len(FAMILY_MARK)] for n in registrations() if n.endswith(FAMILY_MARK)]
    return next((p for p in prefixes if name.startswith(p) and name != p), None)


def is_registered(name: str) -> bool:
    """A registered workload name, a member of a registered family, or a reference."""
    return name in names() or family(name) is not None or is_reference(name)


def registration(name: str) -> Registration:
    """Where workload ``name`` comes from; unknown is a ``PluginError`` listing the known."""
    if is_reference(name):
        return reference(name, WORKLOAD_GROUP)
    found = registrations()
    prefix = family(name)
    if prefix is not None:
        return found[prefix + FAMILY_MARK]
    if name not in found or name.endswith(FAMILY_MARK):
        valid = [*names(), *(n[:-1] + "<...>" for n in found if n.endswith(FAMILY_MARK))]
        raise PluginError(
            f"unknown workload {name!r}; valid names: {', '.join(valid)} "
            "(or a reference, module:function or path/to/file.py:function)"
        )
    return found[name]


def load(name: str) -> Callable[..., Workload]:
    """Workload ``name``'s build function (imported)."""
    entry = registration(name)
    build = entry.load()
    if not callable(build):
        raise PluginError(f"{entry.what()}: expected a build function, got {type(build).__name__}")
    return build  # type: ignore[return-value]


def description(name: str) -> str:
    """``name``'s line: its build's ``description``, else its docstring's first line."""
    build = load(name)
    text = getattr(build, "description", None) or inspect.getdoc(build) or ""
    return str(text).strip().split("\n", 1)[0]


def descriptions() -> dict[str, str]:
    """``{name: one-line description}`` for every training workload (imports them all)."""
    return {name: description(name) for name in names()}


def describe() -> str:
    """One line per workload, ``name  description``, for ``--help`` texts."""
    lines = descriptions()
    width = max(len(n) for n in lines)
    return "\n".join(f"{name:<{width}}  {line}" for name, line in lines.items())


def get(
    name: str,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch_size: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    size: str = "small",
) -> Workload:
    """Build workload ``name`` on ``device``.

    ``seed`` fixes the model initialisation and the shuffling; ``batch_size`` overrides the
    workload's default; ``data_root`` is where data sets are looked for and downloaded to
    (default ``$FNGD_BENCH_DATA`` or ``./data``); ``size`` is ``"small"`` (quick, CPU) or
    ``"paper"`` (the GPU-sized configuration). What a plugin builds is checked against the
    contract (``check_workload``), and a failure names the plugin.
    """
    entry = registration(name)
    check_size(size)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    build = load(name)
    params = inspect.signature(build).parameters
    extra = {"name": name} if "name" in params else {}
    kwargs = dict(
        device=torch.device(device),
        seed=int(seed),
        batch_size=batch_size,
        data_root=data_root,
        size=size,
        **extra,
    )
    if entry.builtin:
        workload = build(**kwargs)
    else:
        try:
            workload = build(**kwargs)
        except (TypeError, ValueError) as exc:  # a mistake in the plugin: name it
            raise PluginError(f"{entry.what()}: its build failed: {exc}") from exc
    if not entry.builtin:
        try:
            check_workload(workload)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{entry.what()}: {exc}") from None
    if not getattr(workload, "description", ""):
        workload.description = description(name)
    return workload
