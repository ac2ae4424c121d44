"""The inversion phase: a batch's coefficients ``c``, from the store or from a fresh solve.

Per block, the Gram operands ``(A, D)`` of the per-sample losses (``D`` rescaled from the
hook's gradient of the mean loss and unscaled from a loss scale, in the solve's dtype), its
Gram matrix by the cheaper path (``fngd.gram``), then the damped solve (``fngd.solve``), per
block or of the summed Gram (network scope), as the coefficient tables' rows; what was
solved goes to the store (``fngd.coefficients``), keyed as ``share`` keeps it.

Under ``DistributedDataParallel`` a rank holds its own samples' pairs, and the coefficients
it stores must be the global batch's (``fngd.preconditioner`` says why). Two ways
(``FNGD(distributed=...)``): ``"global"`` gathers every rank's Gram operands (``(A, D)``
for the pairwise path, the per-sample gradients for the explicit one, chosen for the global
batch) in one ``all_gather`` and solves the global batch's Gram on every rank, so a step
equals one process's on the ranks' batches concatenated in rank order; ``"local"`` solves
each rank's own (block-diagonal across ranks), divides by the world size and gathers every
rank's coefficients. Either way every rank's sample ids come along, so that each rank stores
every sample's coefficients, keyed by global sample id.

Apart from ``FNGD`` so that every input is an argument: the settings at construction; the
blocks, their pairs, the ids, the damping and the process group at each call. One object
serves a training step and the staleness probe's fresh solve (``fngd.staleness``). It keeps
books of what it did (``gram_paths``, ``last_solve``, the ``counts`` it is handed).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from fngd import gram as gram_mod
from fngd import solve as solve_mod
from fngd.coefficients import CoefficientStore
from fngd.distributed import Comm
from fngd.phases import FNGD_GRAM, FNGD_SOLVE, phase
from fngd.solve import NonFiniteGradientError, SolveReport, damped_solve
from fngd.step_state import Uses

#: The key of the whole network's vector (network scope) and of the concatenated directions.
NETWORK = "network"

__all__ = ["NETWORK", "Inversion", "Inverted"]


class GramBlock(Protocol):
    """What the inversion asks of a block (``fngd.blocks.Block``)."""

    name: str
    index: int

    def operands_of(self, uses: Uses) -> tuple[torch.Tensor, torch.Tensor]: ...


class Inverted(NamedTuple):
    """One inversion's coefficients, as the tables' rows."""

    #: This process's samples' (rows, n).
    coefficients: torch.Tensor
    #: What a sample table keeps: every rank's sample ids (this process's without DDP) ...
    ids: torch.Tensor | None
    #: ... and their coefficients (rows, N).
    table: torch.Tensor


class Inversion:
    """Gram matrices, the damped solve and the store, with FNGD's settings of them.

    Args:
        num_blocks: the blocks of the preconditioner (``Block.index`` runs over them).
        scope: ``"layer"`` (a row per block) or ``"network"`` (one row, the summed Gram).
        damping_mode, normalize, gram, loss_reduction, grad_scaler, refresh_epochs,
            distributed: ``FNGD``'s.
        counts: a tally whose ``"gram"`` and ``"solve"`` entries count what ran.
    """

    def __init__(
        self,
        *,
        num_blocks: int,
        scope: str,
        damping_mode: str,
        normalize: bool,
        gram: str,
        loss_reduction: str,
        grad_scaler: Any,
        refresh_epochs: int | None,
        distributed: str,
        counts: dict[str, int],
    ) -> None:
        self.num_blocks = num_blocks
        self.scope = scope
        self.damping_mode = damping_mode
        self.normalize = normalize
        self.gram = gram
        self.loss_reduction = loss_reduction
        self.grad_scaler = grad_scaler
        self.distributed = distributed
        self.counts = counts
        #: Table row of each block index: its own (layer scope) or the one shared row.
        self.rows = [i if scope == "layer" else 0 for i in range(num_blocks)]
        self.num_rows = num_blocks if scope == "layer" else min(num_blocks, 1)
        #: The stored coefficients (``fngd.coefficients``).
        self.store = CoefficientStore(self.num_rows, refresh_epochs)
        #: The Gram path each block took last.
        self.gram_paths: dict[str, str] = {}
        #: What the last solve of a training step did.
        self.last_solve: SolveReport | None = None

    def coefficients(
        self,
        blocks: list[GramBlock],
        pairs: dict[Any, Uses],
        n: int,
        *,
        share: str,
        ids: torch.Tensor | None,
        iteration: int | None,
        epoch: int,
        damping: float,
        comm: Comm | None = None,
    ) -> tuple[torch.Tensor, bool]:
        """``c`` (rows, n) of a batch for ``blocks``, and whether any was solved.

        Stored where the store knows a block's row (``share``: by ``ids``, or ``iteration``
        within ``epoch``), else solved with ``damping`` (across ``comm``'s ranks, under DDP)
        and stored. ``NonFiniteGradientError`` where a solve meets non-finite gradients.
        """
        stored = self.store.lookup(share, ids, iteration, n, epoch)
        rows = self.rows
        known = np.zeros(self.num_rows, dtype=bool) if stored is None else stored[1]
        invert = [b for b in blocks if not known[rows[b.index]]]
        if not invert:
            assert stored is not None
            return stored[0], False
        kept = ids if share == "sample" else None  # what the sample table keys by
        fresh, table_ids, table = self.invert(invert, pairs, n, kept, damping, comm)
        solved = sorted({rows[b.index] for b in invert})
        if share == "sample":  # every rank's samples, under DDP
            self.store.store(share, table, table_ids, None, epoch, solved)
        else:
            self.store.store(share, fresh, ids, iteration, epoch, solved)
        if stored is None:
            return fresh, True
        mask = torch.as_tensor(known, device=fresh.device).unsqueeze(1)
        return torch.where(mask, stored[0].to(fresh), fresh), True

    def invert(
        self,
        active: list[GramBlock],
        pairs: dict[Any, Uses],
        n: int,
        ids: torch.Tensor | None,
        damping: float,
        comm: Comm | None = None,
    ) -> Inverted:
        """Gram matrices and the damped solve for ``active``, inside their phases.

        ``ids``: what the sample table will key the coefficients by (None: nothing), which
        under DDP are gathered from every rank with the coefficients.
        """
        if comm is not None and comm.world_size > 1:
            across = _invert_global if self.distributed == "global" else _invert_local
            return across(self, comm, active, pairs, n, ids, damping)
        with phase(FNGD_GRAM):
            grams = self.grams(active, pairs, n)
            self.counts["gram"] += 1
        with phase(FNGD_SOLVE):
            c, report = self.solve(grams, [b.name for b in active], damping)
            self.counts["solve"] += 1
        self.last_solve = report
        full = self.table_rows(active, c)
        return Inverted(full, ids, full)

    def operands(
        self, active: list[GramBlock], pairs: dict[Any, Uses], n: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's Gram operands ``(A, D)`` for the per-sample losses, in the solve's
        dtype and unscaled by the loss scale."""
        dtype = solve_dtype(pairs[active[0]][0][1].dtype)
        unscale = None if self.grad_scaler is None else 1.0 / loss_scale(self.grad_scaler)
        out = []
        for b in active:
            a, d = b.operands_of(pairs[b])
            a, d = a.to(dtype), d.to(dtype)
            if self.loss_reduction == "mean":
                d = d * n  # the hook saw delta_i / N
            if unscale is not None:
                d = d * unscale  # K / S^2: the damping stays lambda under a scaled loss
            out.append((a, d))
        return out

    def gram_path(self, a: torch.Tensor, d: torch.Tensor, n: int | None = None) -> str:
        """The Gram path for operands ``a``, ``d`` of a batch of ``n`` samples (default: a's)."""
        if self.gram != "auto":
            return self.gram
        return gram_mod.choose(a.shape[0] if n is None else n, *gram_mod.sizes(a, d))

    def grams(self, active: list[GramBlock], pairs: dict[Any, Uses], n: int) -> torch.Tensor:
        """``K_b`` (len(active), N, N) of the per-sample losses, unscaled by the loss scale."""
        grams = []
        for b, (a, d) in zip(active, self.operands(active, pairs, n), strict=True):
            path = self.gram_path(a, d)
            self.gram_paths[b.name] = path
            grams.append(gram_mod.gram(a, d, path))
        return torch.stack(grams)

    def solve(
        self, grams: torch.Tensor, names: list[str], damping: float
    ) -> tuple[torch.Tensor, SolveReport]:
        """``c`` per block (layer scope) or of the summed Gram (network: one row)."""
        if self.scope == "network":
            grams, names = grams.sum(0, keepdim=True), [NETWORK]
        c, report = damped_solve(grams, solve_mod.shift(grams, damping, self.damping_mode), names)
        if self.normalize:
            c = c / c.sum(-1, keepdim=True)
        return c, report

    def table_rows(self, active: list[GramBlock], c: torch.Tensor) -> torch.Tensor:
        """``c`` of ``active`` as the tables' rows: (blocks, N) in layer scope, (1, N) else."""
        if self.scope == "network":
            return c
        full = c.new_zeros(self.num_blocks, c.shape[-1])
        full[[b.index for b in active]] = c
        return full


def solve_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gram and solve run in float64 for a float64 model, else in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def loss_scale(grad_scaler: Any) -> float:
    """The current loss scale of a ``GradScaler`` (``get_scale()``) or of a callable."""
    get = getattr(grad_scaler, "get_scale", None)
    return float(get() if get is not None else grad_scaler())


# -- across ranks ---------------------------------------------------------------------------
def _invert_local(
    inversion: Inversion,
    comm: Comm,
    active: list[GramBlock],
    pairs: dict[Any, Uses],
    n: int,
    ids: torch.Tensor | None,
    damping: float,
) -> Inverted:
    """``distributed="local"``: this rank's solve, then every rank's coefficients.

    The coefficients are gathered whatever ``share`` is, so that a rank whose solve failed
    (non-finite gradients) fails on every rank, and the collectives stay matched. ``ids``
    (None unless the sample table keeps them) are gathered with them.
    """
    with phase(FNGD_GRAM):
        grams = inversion.grams(active, pairs, n)
        inversion.counts["gram"] += 1
    failure: NonFiniteGradientError | None = None
    report: SolveReport | None = None
    with phase(FNGD_SOLVE):
        try:
            c, report = inversion.solve(grams, [b.name for b in active], damping)
            inversion.counts["solve"] += 1
        except NonFiniteGradientError as exc:
            failure = exc
            rows = 1 if inversion.scope == "network" else len(active)
            c = grams.new_full((rows, n), float("nan"))
        c = c / comm.world_size
    with phase(FNGD_GRAM):  # sharing them: what a later epoch's lookup needs
        sizes = comm.sizes(n, c.device)
        (everyone,) = comm.gather([c.T.contiguous()], sizes)
        all_ids = None if ids is None else comm.gather([ids.to(c.device)], sizes)[0].cpu()
    if failure is not None:
        raise failure
    if not bool(torch.isfinite(everyone).all()):
        raise NonFiniteGradientError("non-finite per-sample gradients on another rank")
    inversion.last_solve = report
    return Inverted(
        inversion.table_rows(active, c), all_ids, inversion.table_rows(active, everyone.T)
    )


def _invert_global(
    inversion: Inversion,
    comm: Comm,
    active: list[GramBlock],
    pairs: dict[Any, Uses],
    n: int,
    ids: torch.Tensor | None,
    damping: float,
) -> Inverted:
    """``distributed="global"``: the Gram of the global batch from gathered operands.

    Per block, what its Gram path needs, all in one ``all_gather``; every rank then forms
    the same N x N Gram matrices and solves them, and keeps its own slice of ``c``. ``ids``
    (None unless the sample table keeps them) are gathered with them.
    """
    device = pairs[active[0]][0][1].device
    with phase(FNGD_GRAM):
        sizes = comm.sizes(n, device)
        total = sum(sizes)
        operands = inversion.operands(active, pairs, n)
        paths = [inversion.gram_path(a, d, total) for a, d in operands]
        send: list[torch.Tensor] = []
        for (a, d), path in zip(operands, paths, strict=True):
            send.extend((a, d) if path == "pairwise" else (gram_mod.per_sample_grads(a, d),))
        got = iter(comm.gather(send, sizes))
        grams = []
        for b, path in zip(active, paths, strict=True):
            inversion.gram_paths[b.name] = path
            if path == "pairwise":
                grams.append(gram_mod.gram_pairwise(next(got), next(got)))
            else:
                g = next(got)
                grams.append(g @ g.T)
        all_ids = None if ids is None else comm.gather([ids.to(device)], sizes)[0].cpu()
        inversion.counts["gram"] += 1
    with phase(FNGD_SOLVE):
        c, report = inversion.solve(torch.stack(grams), [b.name for b in active], damping)
        inversion.counts["solve"] += 1
    inversion.last_solve = report
    table = inversion.table_rows(active, c)
    start = sum(sizes[: comm.rank])
    return Inverted(table[:, start : start + n], all_ids, table)
