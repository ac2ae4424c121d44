"""Where workloads and optimisers come from: entry points, and ``module:attr`` references.

One mechanism for every origin. The suite's own workloads and optimisers are entry points of
the ``fngd-bench`` distribution (its ``pyproject.toml``), a plugin's are entry points of its
own distribution, in the same groups; a name on the command line or in the Python API may
also be a reference, ``package.module:attr`` or ``path/to/file.py:attr``, loaded where it is
used (a worker process loads it again from the same text). Every failure here is one
:class:`PluginError` that names the plugin. Torch-free: listing names imports nothing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "OPTIMIZER_GROUP",
    "WORKLOAD_GROUP",
    "PluginError",
    "Registration",
    "discover",
    "is_reference",
    "load_reference",
    "reference",
]

#: The entry-point groups a distribution registers its workloads and optimisers in.
WORKLOAD_GROUP = "fngd_bench.workloads"
OPTIMIZER_GROUP = "fngd_bench.optimizers"
#: The distribution whose entry points are the suite's own (``fngd-bench list``: "built in").
HOME = "fngd-bench"


class PluginError(ValueError):
    """A plugin that cannot be used: not found, fails to import, clashes or breaks the
    contract. The message names the plugin and where it came from."""


@dataclass(frozen=True)
class Registration:
    """One registered name: what it points at (``module:attr``) and where it came from."""

    name: str
    value: str
    origin: str  # "fngd-bench 0.1.0 (built in)", "my-plugin 1.2", "reference"
    group: str = ""
    builtin: bool = False  # registered by the suite itself

    def load(self) -> object:
        """The object ``value`` names; any failure is a :class:`PluginError` naming it."""
        try:
            return load_reference(self.value)
        except PluginError as exc:
            raise PluginError(f"{self.what()}: {exc}") from None

    def what(self) -> str:
        kind = "workload" if self.group == WORKLOAD_GROUP else "optimizer"
        if self.origin == "reference":
            return f"{kind} {self.name!r}"
        return f"{kind} {self.name!r} of {self.origin} (entry point {self.value})"


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``module:attr`` or ``file.py:attr`` reference, not a name."""
    where, sep, attr = name.rpartition(":")
    return bool(sep and where and attr)


def reference(name: str, group: str) -> Registration:
    """The registration a reference stands for (named by its own text)."""
    if not is_reference(name):
        raise PluginError(f"{name!r} is not a reference (module:attr or path/to/file.py:attr)")
    return Registration(name=name, value=name, origin="reference", group=group)


def load_reference(text: str) -> object:
    """The object ``package.module:attr`` or ``path/to/file.py:attr`` names (``attr`` may be
    dotted). A file is imported once per process, under a name made from its path. A
    failure says what is missing (its caller, ``Registration.load``, names the reference)."""
    where, _, attr = text.rpartition(":")
    if not where or not attr:
        raise PluginError(f"{text!r}: expected module:attr or path/to/file.py:attr")
    module = _import_file(where) if _is_path(where) else _import_module(where)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{where} has no attribute {attr!r}") from None
    return obj


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_module(name: str) -> object:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
        raise PluginError(
            f"cannot import {name}: {type(exc).__name__}: {exc}"
        ) from exc


@functools.cache
def _import_file(where: str) -> object:
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"no file {where}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"fngd_bench_file_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    folder = str(path.parent)
    if folder not in sys.path:  # its own imports find the modules beside it, as
        sys.path.append(folder)  # `python file.py` would (after everything else)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
        del sys.modules[name]
        raise PluginError(f"cannot import {where}: {type(exc).__name__}: {exc}") from exc
    return module


@functools.cache
def discover(group: str) -> dict[str, Registration]:
    """Every name registered in ``group``, in order: the suite's own first, then each
    plugin distribution's (alphabetically). Two distributions registering one name is a
    :class:`PluginError` naming both; nothing is imported."""
    found: dict[str, Registration] = {}
    for ep in sorted(importlib.metadata.entry_points(group=group), key=_order):
        dist = ep.dist
        name = dist.metadata["Name"] if dist is not None else "an unknown distribution"
        version = f" {dist.version}" if dist is not None else ""
        home = _canonical(name) == HOME
        origin = f"{name}{version}" + (" (built in)" if home else "")
        entry = Registration(ep.name, ep.value, origin, group, builtin=home)
        held = found.get(ep.name)
        if held is not None and held.origin != origin:
            raise PluginError(
                f"{group}: {ep.name!r} is registered twice, by {held.origin} "
                f"({held.value}) and by {origin} ({ep.value}); uninstall one or rename it"
            )
        found.setdefault(ep.name, entry)
    if not any(r.builtin for r in found.values()):
        raise PluginError(
            f"{group}: fngd-bench's own entry points are missing: it is not installed, its "
            "installed metadata is older than its pyproject.toml, or an old "
            "fngd_bench.egg-info on the path shadows it; reinstall it (pip install -e .) "
            "and delete any stale fngd_bench.egg-info folder"
        )
    return found


def _order(ep: importlib.metadata.EntryPoint) -> tuple[int, str]:
    dist = ep.dist
    name = _canonical(dist.metadata["Name"]) if dist is not None else ""
    return (0 if name == HOME else 1, name)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
