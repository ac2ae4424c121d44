"""The sweep presets, ``quick``, ``ablation`` and ``paper`` (the labels they name are in
``bench.labels``).

Presets
-------
``quick``: real data at CPU size (mlp-digits, cnn-mnist1d) for every optimiser family, seeds
``QUICK_SEEDS`` (five, so that every ratio's interval covers what it says: docs/STATISTICS.md),
``QUICK_EPOCHS`` epochs so FNGD
shows its inversion epoch and its weighted-sum epochs;
about ``QUICK_MINUTES`` minutes on a 2-core CPU, including the timer-overhead measurement.

``rivals``: the quick preset's workloads, epochs and seeds for SGD, AdamW, KFAC, FNGD in
both scopes and the rivals (Muon, SOAP, PSGD-Kron, Schedule-Free AdamW) at their library
defaults; about ``RIVALS_MINUTES`` minutes on a 2-core CPU. Tuned, they are the committed
verdict of results/README.md.

``ablation``: FNGD's design space: both CPU workloads at their own epochs, seeds
``ABLATION_SEEDS`` (three: their paired intervals still cover 95 % on log-normal run times,
a little more with slow runs), ``sgd`` (the reference of every ratio) and every label of
``NGD_LABELS`` (scope x sharing x damping); about ``ABLATION_MINUTES`` minutes on a 2-core
CPU. Its report's "FNGD design space" section lays the cells out by their hyperparameters.

``paper``: resnet18-cifar100 (batch 128) and transformer-multi30k at size ``paper`` for
sgd, adamw, kfac, kfac-inv1, fngd, fngd-iter and ngd; two full, reshuffled epochs (FNGD's
inversion epoch and a weighted-sum epoch). Epochs cut short would replay the first epoch's
batches (``bench.cell.build.replays_first_epoch``), which hands FNGD coefficients computed on
exactly the batches it meets again: a best case the paper did not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.labels import NGD_LABELS, RIVALS

if TYPE_CHECKING:
    from bench.cell import CellSpec

__all__ = ["PRESETS", "Preset"]


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
        from bench.campaign.sweep import make_cells  # torch: only when cells are made

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
#: Five: the verdict's paired t over 5 seeds covers 95 % of known ratios (docs/STATISTICS.md)
QUICK_SEEDS = (0, 1, 2, 3, 4)
# measured on the shared 2-core AMD EPYC, report included, with other jobs keeping both cores
# busy (load average 2.5-3.0): 6.3 minutes for these 5 seeds (at 6ccf3ec), 3.8 for 3 seeds
# (at a30e408); 3 seeds took 1.75 minutes on the quiet machine at 8caca9d, so 5 take about 3
QUICK_MINUTES = 3
#: The rivals preset: the quick preset's workloads and seeds, FNGD's two scopes, its
#: baselines and the rivals (fngd/optimizers/rivals/; the ``rivals`` extra).
RIVALS_OPTIMIZERS = ("sgd", "adamw", "kfac", "fngd", "fngd-net", *RIVALS)
# estimated, not measured: the quick preset's minutes x 9 labels / its 6 (the rivals' steps
# on these models cost 1-3x an AdamW step)
RIVALS_MINUTES = 5
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
    "rivals": Preset(
        name="rivals",
        workloads=("mlp-digits", "cnn-mnist1d"),
        optimizers=RIVALS_OPTIMIZERS,
        seeds=QUICK_SEEDS,
        epochs=QUICK_EPOCHS,
        size="small",
        overhead=(("mlp-digits", "sgd"),),
        description=(
            "the quick preset's workloads, epochs and seeds for "
            + "/".join(RIVALS_OPTIMIZERS)
            + f" (needs the rivals extra); about {RIVALS_MINUTES} minutes on a 2-core CPU "
            "(estimated)"
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
