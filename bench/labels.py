"""Optimizer labels: the one table of what each label runs (torch-free).

A *label* names what a cell runs and is what every record carries in ``optimizer``; the
factory name behind it is in ``family`` and the hyperparameters actually used in
``hparams``. A label is a factory name (``sgd``, ``adamw``, ``kfac``, ``ngd``, ``fngd``) or a
variant of one with fixed overrides:

| label       | family | overrides                                               |
| ----------- | ------ | ------------------------------------------------------- |
| `kfac`      | kfac   | `inv_update_steps=10` (kfac-pytorch's CIFAR example)    |
| `kfac-inv1` | kfac   | `inv_update_steps=1` (inverse every step)               |
| `fngd`      | fngd   | `share="sample"` (coefficients shared by sample id)     |
| `fngd-iter` | fngd   | `share="iteration"` (shared by position in the epoch)   |
| `ngd-net`   | ngd    | `scope="network"` (one coefficient vector per batch)    |
| `fngd-net`  | fngd   | `share="sample"`, `scope="network"`: a later step is a  |
|             |        | plain backward of the reweighted per-sample loss        |
| `fngd-net-iter` | fngd | `share="iteration"`, `scope="network"`               |

The rivals (``fngd.optimizers.rivals``) are labels of their own: ``muon``, ``soap``,
``psgd-kron``, and ``sf-adamw`` with ``schedule="constant"`` (Schedule-Free needs no
schedule: whatever the workload gives the others, it runs a constant rate after its
warm-up).

Each of the six ``ngd``/``fngd`` labels above (``NGD_LABELS``) also comes with each damping
strategy as a suffix, adding to its overrides:

| suffix   | overrides                                                               |
| -------- | ----------------------------------------------------------------------- |
| `-rel`   | `damping_mode="relative"`, `damping=RELATIVE_DAMPING`: the shift is 3x  |
|          | the Gram's mean eigenvalue                                              |
| `-norm`  | `normalize=True`: stored coefficients sum to 1                          |
| `-sched` | `damping=DAMPING_SCHEDULE` (an ``fngd.damping`` spec, 1.0 down to 0.01) |

e.g. ``fngd-rel``, ``fngd-iter-norm``, ``ngd-net-sched``, ``fngd-net-rel``.

Hyperparameters are merged as: factory defaults < ``workload.hparams[family]`` <
``workload.hparams[label]`` (if a workload tunes a variant) < the label's overrides <
overrides given to the cell.

Every reader takes labels from here: the runner (what to build), the command line (what is
valid), the report's vocabulary (families, colours) and its design-space section (scope,
sharing, damping strategy, also from a record's hyperparameters: :func:`damping_strategy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DAMPINGS",
    "DAMPING_SCHEDULE",
    "NGD_LABELS",
    "RELATIVE_DAMPING",
    "RIVALS",
    "VARIANTS",
    "Damping",
    "Variant",
    "damping_strategy",
    "labels",
    "plugin_families",
    "resolve_label",
]


@dataclass(frozen=True)
class Variant:
    label: str
    family: str
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""


#: The ``-sched`` variants' damping (an ``fngd.damping`` spec): strong damping while the
#: network is far from a minimum, 100x weaker after ``200`` steps (the first epochs).
DAMPING_SCHEDULE = "geometric:1.0:0.01:200"

#: The ``-rel`` variants' damping: the shift is this many times the Gram's mean eigenvalue.
#: Measured on cnn-mnist1d (seed 0, 30 epochs, fngd-net-rel): 0.1 and 0.3 collapse to chance
#: accuracy, 1.0 reaches 0.64 and 3.0 reaches 0.89 (constant damping 0.1: about 0.89).
RELATIVE_DAMPING = 3.0

#: Coefficient scope and sharing of the FNGD/NGD labels: (label, family, overrides, note).
_NGD_FAMILY: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("ngd", "ngd", {}, "exact NGD (N x N solve every step)"),
    ("fngd", "fngd", {"share": "sample"}, "FNGD, coefficients shared by sample"),
    ("fngd-iter", "fngd", {"share": "iteration"}, "FNGD, coefficients shared by iteration"),
    ("ngd-net", "ngd", {"scope": "network"}, "exact whole-network NGD (one N x N solve)"),
    (
        "fngd-net",
        "fngd",
        {"share": "sample", "scope": "network"},
        "FNGD, one whole-network vector shared by sample",
    ),
    (
        "fngd-net-iter",
        "fngd",
        {"share": "iteration", "scope": "network"},
        "FNGD, one whole-network vector shared by iteration",
    ),
)
@dataclass(frozen=True)
class Damping:
    """A damping strategy of the NGD/FNGD labels: its name (records and reports), its label
    suffix, the overrides it adds, and how a record's hyperparameters show it."""

    name: str
    suffix: str
    overrides: dict[str, Any]
    note: str
    shown_by: Callable[[Mapping[str, Any]], bool]


def _is_schedule(damping: object) -> bool:
    """A damping that is not one number: a spec string of a schedule, or a callable."""
    from fngd.damping import parse  # torch-free

    if isinstance(damping, str):
        try:
            return not isinstance(parse(damping), float)
        except ValueError:
            return True
    return callable(damping)


#: The damping strategies, in table order (the report's order too).
DAMPINGS: tuple[Damping, ...] = (
    Damping("constant", "", {}, "", lambda hp: False),
    Damping(
        "relative",
        "-rel",
        {"damping_mode": "relative", "damping": RELATIVE_DAMPING},
        f", relative damping {RELATIVE_DAMPING}",
        lambda hp: hp.get("damping_mode", "constant") == "relative",
    ),
    Damping(
        "normalised",
        "-norm",
        {"normalize": True},
        ", normalised coefficients",
        lambda hp: bool(hp.get("normalize")),
    ),
    Damping(
        "schedule",
        "-sched",
        {"damping": DAMPING_SCHEDULE},
        f", damping {DAMPING_SCHEDULE}",
        lambda hp: _is_schedule(hp.get("damping", 0.0)),
    ),
)


def damping_strategy(hparams: Mapping[str, Any]) -> str:
    """The strategy a cell's hyperparameters show (``+``-joined if several; ``constant``
    if none), so records of any origin, tuned or hand-set, read as the labels do."""
    shown = [d.name for d in DAMPINGS if d.shown_by(hparams)]
    return " + ".join(shown) or "constant"


def _ngd_variants() -> list[Variant]:
    """Every scope x sharing label with every damping strategy (``fngd-net-rel``, ...)."""
    return [
        Variant(label + d.suffix, family, {**overrides, **d.overrides}, note + d.note)
        for d in DAMPINGS
        for label, family, overrides, note in _NGD_FAMILY
    ]


VARIANTS: dict[str, Variant] = {
    v.label: v
    for v in (
        Variant("sgd", "sgd", {}, "SGD with momentum"),
        Variant("adamw", "adamw", {}, "AdamW"),
        Variant("kfac", "kfac", {"inv_update_steps": 10}, "KFAC, inverse every 10 steps"),
        Variant("kfac-inv1", "kfac", {"inv_update_steps": 1}, "KFAC, inverse every step"),
        *_ngd_variants(),
        Variant("muon", "muon", {}, "Muon on weight matrices, AdamW on the rest"),
        Variant("soap", "soap", {}, "SOAP, eigenbasis every 10 steps"),
        Variant("psgd-kron", "psgd-kron", {}, "PSGD-Kron"),
        Variant("sf-adamw", "sf-adamw", {"schedule": "constant"}, "Schedule-Free AdamW"),
    )
}
#: The rivals' labels, in table order.
RIVALS = ("muon", "soap", "psgd-kron", "sf-adamw")
#: The scope x sharing x damping labels, in table order (the ablation preset runs them all).
NGD_LABELS = tuple(v.label for v in _ngd_variants())


def plugin_families() -> list[str]:
    """The optimiser families registered beyond the table (plugins'), in the registry's order.

    A plugin family named like one of the table's labels (``fngd-iter``) would be shadowed
    by it without a word, so it is a ``PluginError`` naming the plugin; a family named like
    one of the suite's own families (``sgd``) is already one (a clash in the registry)."""
    from fngd.optimizers import registry  # torch-free; lists names without importing them
    from fngd.optimizers.plugins import PluginError

    names = registry.names()
    for name in names:
        entry = registry.registration(name)
        if name in VARIANTS and not entry.builtin:
            raise PluginError(
                f"{entry.what()}: {name!r} is a built-in optimizer label "
                f"({VARIANTS[name].note}); the plugin must register it under another name"
            )
    return [n for n in names if n not in VARIANTS]


def labels() -> list[str]:
    """Every valid optimiser label: the table's, then each plugin family's own name."""
    return [*VARIANTS, *plugin_families()]


def resolve_label(label: str) -> Variant:
    """The variant behind ``label``: the table's; else a family registered by a plugin, or
    a reference (``pkg.mod:factory``, ``path/to/file.py:factory``), which is its own label
    with no overrides. Unknown labels raise ``KeyError`` listing the valid ones; a plugin
    family named like a label of the table is a ``PluginError`` (``plugin_families``)."""
    from fngd.optimizers import registry

    plugin_families()  # a plugin shadowed by the table is an error, whichever label is asked
    if label in VARIANTS:
        return VARIANTS[label]
    if registry.is_known(label):
        return Variant(label, label, {}, _note(label))
    raise KeyError(
        f"unknown optimizer {label!r}; valid: {', '.join(labels())} "
        "(or a reference, module:factory or path/to/file.py:factory)"
    )


def _note(label: str) -> str:
    from fngd.optimizers import registry

    entry = registry.registration(label)
    return f"{entry.origin}: {entry.value}" if entry.origin != "reference" else "reference"
