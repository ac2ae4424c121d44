"""Checks of what the command line names (workloads, labels, devices, output paths), each a
:class:`UsageError` of one line before anything runs."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cli.command import UsageError
from bench.records import RECORD_SUFFIXES, record_files

__all__ = [
    "check_cells",
    "check_device",
    "check_names",
    "check_optimizers",
    "check_workloads",
    "check_out_dir",
    "check_out_file",
    "has_records",
    "say",
    "workload_names",
]


def say(message: str) -> None:
    """One ``fngd-bench:`` line on stderr."""
    print(f"fngd-bench: {message}", file=sys.stderr)


def workload_names() -> list[str]:
    try:
        from bench import workloads
    except ImportError as exc:
        raise UsageError(
            f"the workload registry (bench.workloads) is not available: {exc}"
        ) from None
    return list(workloads.names())


def check_workloads(given: Sequence[str]) -> None:
    """Every name a registered workload, a member of a family (``mlp-random-128``), or a
    reference (``pkg.mod:build``, ``path/to/file.py:build``), and its build function
    imports: a broken plugin is one line here, not a failed cell later."""
    from bench.workloads import registry
    from fngd.optimizers.plugins import PluginError

    check_names("workload", [w for w in given if not registry.is_registered(w)], workload_names())
    for name in given:
        try:
            registry.load(name)
        except PluginError as exc:  # names the workload and where it came from
            raise UsageError(str(exc)) from None


def check_optimizers(given: Sequence[str]) -> None:
    """Every name an optimizer label (``bench.labels``), a plugin's family, or a reference
    (``pkg.mod:factory``, ``path/to/file.py:factory``), and its family imports and registers
    an ``OptimizerSpec`` or a factory: a broken plugin is one line here."""
    from bench.labels import labels, resolve_label
    from fngd.optimizers import registry
    from fngd.optimizers.plugins import PluginError, is_reference

    valid = labels()
    check_names("optimizer", [o for o in given if not is_reference(o)], valid)
    for name in given:
        try:
            registry.get(resolve_label(name).family)
        except PluginError as exc:  # names the optimizer and where it came from
            raise UsageError(str(exc)) from None


def check_cells(cells: Sequence[Any], data_root: Any = None) -> None:
    """Build what plugins and references bring, once, before any cell runs: each such
    workload (on the CPU, seed 0: its contract, and that the keys of its ``hparams`` are
    optimizer labels) and each such optimizer, or rival (its library may be missing), on a
    workload's model with the hyperparameters its cell would get. A mistake is one
    ``UsageError`` naming the plugin, not a failed cell in the middle of a sweep."""
    from bench.cell.build import cell_hparams
    from bench.cell.schedules import split_schedule
    from bench.labels import RIVALS, labels, resolve_label
    from bench.workloads import registry as workloads
    from fngd.optimizers import build, registry
    from fngd.optimizers.plugins import PluginError, is_reference

    valid = set(labels())
    built: dict[tuple[str, str], Any] = {}
    tried: set[tuple[str, str, str]] = set()
    for spec in cells:
        family = resolve_label(spec.optimizer).family
        outside_w = not workloads.registration(spec.workload).builtin
        outside_o = not registry.registration(family).builtin or family in RIVALS
        if not (outside_w or outside_o):
            continue
        key = (spec.workload, spec.size)
        try:
            if key not in built:
                built[key] = workloads.get(spec.workload, seed=0, size=spec.size,
                                           data_root=data_root)
                unknown = [k for k in built[key].hparams if k not in valid and not is_reference(k)]
                if unknown:
                    raise PluginError(
                        f"workload {spec.workload!r}: its hparams name no optimizer label: "
                        f"{', '.join(map(repr, unknown))} (labels: `fngd-bench list`)"
                    )
            if outside_o and (spec.workload, spec.size, spec.optimizer) not in tried:
                tried.add((spec.workload, spec.size, spec.optimizer))
                _, hp = split_schedule(cell_hparams(spec, built[key]))
                build(family, built[key].model, **hp)
        except PluginError as exc:
            raise UsageError(str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"optimizer {spec.optimizer!r} on {spec.workload!r}: {exc}") from None


def check_names(kind: str, given: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [name for name in given if name not in valid]
    if unknown:
        raise UsageError(
            f"unknown {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
            f"valid {kind}s: {', '.join(valid)}"
        )


def check_device(device: str) -> None:
    """``--device cuda`` on a machine without CUDA is a usage mistake, not a crash."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no usable GPU"
            raise UsageError(
                f"--device cuda: CUDA is not available here (torch {torch.__version__}, "
                f"{build}); use --device cpu or auto"
            )


def check_out_dir(out: Path, flag: str = "--out") -> None:
    """``out`` is, or can become, a directory this process can write in."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out}: exists and is a file, not a directory")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{flag} {out}: {existing} is a file, not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: {existing} is not writable")


def check_out_file(out: Path, flag: str = "--out") -> None:
    """``out`` is, or can become, a file this process can write."""
    if out.is_dir():
        raise UsageError(f"{flag} {out}: is a directory; name a file")
    check_out_dir(out.parent, flag=f"{flag} {out}: folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"{flag} {out}: is not writable")


def has_records(path: Path) -> bool:
    if path.is_file():
        return path.suffix in RECORD_SUFFIXES
    return bool(record_files(path, recursive=True))
