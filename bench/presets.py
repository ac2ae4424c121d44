"""Optimiser labels and the sweep presets, ``quick``, ``ablation`` and ``paper``.

Optimiser labels
----------------
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

Presets
-------
``quick``: real data at CPU size (mlp-digits, cnn-mnist1d) for every optimiser family, seeds
``QUICK_SEEDS`` (so every ratio gets a confidence interval), ``QUICK_EPOCHS`` epochs so FNGD
shows its inversion epoch and its weighted-sum epochs;
about ``QUICK_MINUTES`` minutes on a 2-core CPU, including the timer-overhead measurement.

``ablation``: FNGD's design space: both CPU workloads at their own epochs, seeds
``ABLATION_SEEDS``, ``sgd`` (the reference of every ratio) and every label of
``NGD_LABELS`` (scope x sharing x damping); about ``ABLATION_MINUTES`` minutes on a 2-core
CPU. Its report's "FNGD design space" section lays the cells out by their hyperparameters.

``paper``: resnet18-cifar100 (batch 128) and transformer-multi30k at size ``paper`` for
sgd, adamw, kfac, kfac-inv1, fngd, fngd-iter and ngd; two full, reshuffled epochs (FNGD's
inversion epoch and a weighted-sum epoch). Epochs cut short would replay the first epoch's
batches (``bench.runner.replays_first_epoch``), which hands FNGD coefficients computed on
exactly the batches it meets again: a best case the paper did not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.runner import CellSpec

__all__ = ["PRESETS", "VARIANTS", "Preset", "Variant", "labels", "resolve_label"]


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
#: Damping strategies, as label suffixes: (suffix, overrides, note).
_DAMPINGS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("", {}, ""),
    (
        "-rel",
        {"damping_mode": "relative", "damping": RELATIVE_DAMPING},
        f", relative damping {RELATIVE_DAMPING}",
    ),
    ("-norm", {"normalize": True}, ", normalised coefficients"),
    ("-sched", {"damping": DAMPING_SCHEDULE}, f", damping {DAMPING_SCHEDULE}"),
)


def _ngd_variants() -> list[Variant]:
    """Every scope x sharing label with every damping strategy (``fngd-net-rel``, ...)."""
    return [
        Variant(label + suffix, family, {**overrides, **damping}, note + extra)
        for suffix, damping, extra in _DAMPINGS
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
    )
}
#: The scope x sharing x damping labels, in table order (the ablation preset runs them all).
NGD_LABELS = tuple(v.label for v in _ngd_variants())


def labels() -> list[str]:
    """Every valid optimiser label."""
    return list(VARIANTS)


def resolve_label(label: str) -> Variant:
    """The variant behind ``label``; unknown labels raise ``KeyError`` listing the valid ones."""
    try:
        return VARIANTS[label]
    except KeyError:
        raise KeyError(f"unknown optimizer {label!r}; valid: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class Preset:
    """What ``fngd-bench run --preset NAME`` runs (command-line options override fields).

    ``epochs``: one number for every workload, a mapping workload -> epochs, or ``None``
    for each workload's own ``epochs`` (also for workloads missing from the mapping);
    ``batch_size`` maps a workload to a batch size (others use the workload's default);
    ``overhead`` lists the (workload, label) pairs whose runner overhead is measured.
    """

    name: str
    workloads: tuple[str, ...]
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    epochs: int | dict[str, int] | None = None
    max_steps_per_epoch: int | None = None
    size: str = "small"
    batch_size: dict[str, int] = field(default_factory=dict)
    warmup_steps: int = 3
    overhead: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def epochs_for(self, workload: str) -> int | None:
        if isinstance(self.epochs, dict):
            return self.epochs.get(workload)
        return self.epochs

    def workloads_for(self, workloads: Sequence[str] | None = None) -> list[str]:
        """``workloads`` (default: the preset's), each once, in order."""
        return list(dict.fromkeys(workloads or self.workloads))

    def optimizers_for(self, optimizers: Sequence[str] | None = None) -> list[str]:
        """``optimizers`` (default: the preset's), each once, in order."""
        return list(dict.fromkeys(optimizers or self.optimizers))

    def cells(
        self,
        workloads: Sequence[str] | None = None,
        optimizers: Sequence[str] | None = None,
        *,
        seeds: Sequence[int] | None = None,
        epochs: int | None = None,
        max_steps_per_epoch: int | None = None,
        size: str | None = None,
        warmup_steps: int | None = None,
    ) -> list[CellSpec]:
        """The preset's cells; every argument left ``None`` is the preset's own."""
        from bench.sweep import make_cells  # the runner imports the labels from here

        cells = make_cells(
            self.workloads_for(workloads),
            self.optimizers_for(optimizers),
            list(seeds) if seeds is not None else list(self.seeds),
            max_steps_per_epoch=(
                max_steps_per_epoch if max_steps_per_epoch is not None else self.max_steps_per_epoch
            ),
            size=size or self.size,
            warmup_steps=warmup_steps if warmup_steps is not None else self.warmup_steps,
            preset=self.name,
        )
        for spec in cells:
            spec.batch_size = self.batch_size.get(spec.workload)
            spec.epochs = epochs if epochs is not None else self.epochs_for(spec.workload)
        return cells

    def overhead_for(
        self, workloads: Sequence[str] | None = None, optimizers: Sequence[str] | None = None
    ) -> list[tuple[str, str]]:
        """The (workload, label) pairs whose overhead is measured, among the cells asked
        for: the preset's pairs of ``workloads`` and ``optimizers``, else the first workload
        with the first label."""
        chosen = self.workloads_for(workloads)
        labels = self.optimizers_for(optimizers)
        pairs = [(w, o) for w, o in self.overhead if w in chosen and o in labels]
        if not pairs and chosen and labels:
            pairs = [(chosen[0], labels[0])]
        return pairs


QUICK_EPOCHS = {"mlp-digits": 10, "cnn-mnist1d": 30}
QUICK_SEEDS = (0, 1, 2)
# measured at 8caca9d: 1.75 minutes (3 seeds) on a quiet 2-core AMD EPYC, report included
QUICK_MINUTES = 2
ABLATION_SEEDS = (0, 1, 2)
ABLATION_MINUTES = 12  # measured: 40 s for 12 cells of one seed (3.4 s a cell) -> ~9 min

PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        workloads=("mlp-digits", "cnn-mnist1d"),
        optimizers=("sgd", "adamw", "kfac", "ngd", "fngd", "fngd-net"),
        seeds=QUICK_SEEDS,
        epochs=QUICK_EPOCHS,
        size="small",
        overhead=(("mlp-digits", "sgd"), ("cnn-mnist1d", "kfac")),
        description=(
            "real data at CPU size (mlp-digits, cnn-mnist1d), sgd/adamw/kfac/ngd/fngd/fngd-net, "
            f"{len(QUICK_SEEDS)} seeds, "
            + ", ".join(f"{w} {n} epochs" for w, n in QUICK_EPOCHS.items())
            + f"; about {QUICK_MINUTES} minutes on a 2-core CPU, report included"
        ),
    ),
    "ablation": Preset(
        name="ablation",
        workloads=("mlp-digits", "cnn-mnist1d"),
        optimizers=("sgd", *NGD_LABELS),
        seeds=ABLATION_SEEDS,
        epochs=None,
        size="small",
        overhead=(("mlp-digits", "sgd"),),
        description=(
            "FNGD's design space on the CPU workloads (mlp-digits, cnn-mnist1d) at their own "
            f"epochs, {len(ABLATION_SEEDS)} seeds: sgd and every scope x sharing x damping label "
            f"({len(NGD_LABELS)}); about {ABLATION_MINUTES} minutes on a 2-core CPU"
        ),
    ),
    "paper": Preset(
        name="paper",
        workloads=("resnet18-cifar100", "transformer-multi30k"),
        optimizers=("sgd", "adamw", "kfac", "kfac-inv1", "fngd", "fngd-iter", "ngd"),
        seeds=(0,),
        epochs=2,
        size="paper",
        batch_size={"resnet18-cifar100": 128},
        overhead=(("resnet18-cifar100", "sgd"), ("resnet18-cifar100", "fngd")),
        description=(
            "paper-size resnet18-cifar100 (batch 128) and transformer-multi30k for sgd, adamw, "
            "kfac (inverse every 10 steps and every step), fngd (by sample and by iteration), "
            "ngd; 2 full, reshuffled epochs (needs a GPU)"
        ),
    ),
}
