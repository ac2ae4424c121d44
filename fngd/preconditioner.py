"""FNGD: natural gradient as a weighted sum of per-sample gradients, inverted once.

For one block with per-sample gradients ``g_i`` (columns of G, d x N), the damped natural
gradient of the mean loss is, by Sherman-Morrison-Woodbury,

    (G G^T / N + damping I)^-1 (G 1 / N) = G c,   c = (K + N damping I)^-1 1,   K = G^T G,

an N x N solve instead of a d x d one (for ``loss_reduction="sum"`` the result is N times
that). Natural gradient descent is thus a weighted sum of per-sample gradients, and SGD is
the special case ``c_i = 1/N``. FNGD computes ``c`` (the *inversion* phase: Gram matrix and
solve) in the first epoch only, stores it, and in later epochs reuses it (the *weighted-sum*
phase): ``sum_i c_i g_i`` is the ordinary weight-gradient GEMM with the rows of grad_output
scaled, so a later step costs an SGD step.

Usage, in kfac-pytorch's pattern::

    pre = FNGD(model, damping=1e-3, share="sample")
    pre.prepare(sample_ids=idx)        # optional: the weighted sum then runs inside backward
    loss.backward(); pre.step(sample_ids=idx); optimizer.step()
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fngd import gram as gram_mod
from fngd.blocks import Block, block_type
from fngd.coefficients import IterationTable, SampleTable
from fngd.phases import FNGD as FNGD_PHASES
from fngd.phases import FNGD_GRAM, FNGD_SOLVE, FNGD_WEIGHTED_SUM, phase
from fngd.phases import NGD as NGD_PHASES
from fngd.solve import NonFiniteGradientError, SolveReport, damped_solve
from fngd.step_state import StepState

Share = Literal["none", "sample", "iteration"]
SHARES = ("none", "sample", "iteration")
REDUCTIONS = ("mean", "sum")
GRAM_CHOICES = ("auto", "pairwise", "explicit")
#: Whether the weighted-sum phase checks for non-finite gradients unless told otherwise (the
#: optimiser factory's default too); why it is off: ``FNGD``'s ``check_finite``.
CHECK_FINITE = False

__all__ = ["CHECK_FINITE", "FNGD", "NonFiniteGradientError"]


def _matches(patterns: Iterable[str], name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return any(re.search(p, name) or re.fullmatch(p, cls) for p in patterns)


class FNGD:
    """Fast natural gradient preconditioner for nn.Linear and nn.Conv2d blocks.

    Args:
        model: its Linear and Conv2d modules (minus ``skip_layers``) become blocks; other
            parameters (norms, embeddings) keep their plain gradient.
        damping: ``lambda`` in ``(F + lambda I)^-1``.
        share: ``"sample"`` (coefficients per dataset sample id; ``sample_ids`` required),
            ``"iteration"`` (per iteration index within the epoch; ``steps_per_epoch``
            required) or ``"none"`` (exact NGD: the inversion phase at every step).
        refresh_epochs: recompute the coefficients every k epochs; None inverts only when
            a coefficient is first needed (the first epoch), as the paper does.
        steps_per_epoch: steps in an epoch, to count epochs and iterations.
        loss_reduction: how the batch loss was reduced over samples, ``"mean"`` or ``"sum"``.
            A loss averaged over all tokens of a batch counts as ``"mean"``: each sample's
            loss is then its tokens' sum divided by the mean token count, which divides the
            Fisher by that count squared (so the damping weighs relatively more).
        gram: ``"auto"`` picks pairwise or explicit per layer by a cost estimate.
        skip_layers: regular expressions on module names (search) or class names (full
            match) of modules to leave out.
        check_finite: in the weighted-sum phase, check every block's gradient is finite and
            raise ``NonFiniteGradientError`` naming the blocks that are not. Off by default
            (``CHECK_FINITE``, also the factory's default): a later step is meant to cost an
            SGD step, and the check is a host synchronisation per step that SGD does not pay
            (on a GPU it stalls the queue); a NaN still shows in the loss. The inversion phase
            always checks, as its solve needs finite Gram matrices.

    ``mode`` says what the last step did: ``"inversion"`` (some block solved for its
    coefficients) or ``"weighted_sum"`` (every block reused stored ones); None before the
    first step. Under a ``torch.func`` transform the blocks run their module's plain op and
    record nothing, so per-sample gradients and the like can be taken with FNGD attached.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        damping: float = 1e-3,
        share: Share = "sample",
        refresh_epochs: int | None = None,
        steps_per_epoch: int | None = None,
        loss_reduction: str = "mean",
        gram: str = "auto",
        skip_layers: Iterable[str] = (),
        check_finite: bool = CHECK_FINITE,
    ) -> None:
        if share not in SHARES:
            raise ValueError(f"unknown share {share!r}; valid: {', '.join(SHARES)}")
        if loss_reduction not in REDUCTIONS:
            raise ValueError(
                f"unknown loss_reduction {loss_reduction!r}; valid: {', '.join(REDUCTIONS)}"
            )
        if gram not in GRAM_CHOICES:
            raise ValueError(f"unknown gram {gram!r}; valid: {', '.join(GRAM_CHOICES)}")
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        if share == "iteration" and not steps_per_epoch:
            raise ValueError('share="iteration" needs steps_per_epoch')
        if refresh_epochs is not None and refresh_epochs < 1:
            raise ValueError(f"refresh_epochs must be >= 1 or None, got {refresh_epochs}")
        self.damping = float(damping)
        self.share: Share = share
        self.refresh_epochs = refresh_epochs
        self.steps_per_epoch = steps_per_epoch
        self.loss_reduction = loss_reduction
        self.gram = gram
        self.skip_layers = list(skip_layers)
        self.check_finite = check_finite

        self.blocks: list[Block] = []
        for name, module in model.named_modules():
            cls = block_type(module)
            if cls is None or _matches(self.skip_layers, name, module):
                continue
            if not module.weight.requires_grad:
                continue
            self.blocks.append(cls(name, module, self, len(self.blocks)))

        self._dtype = self.blocks[0].module.weight.dtype if self.blocks else torch.float32
        self.sample_table = SampleTable(len(self.blocks), refresh_epochs)
        self.iteration_table = IterationTable(len(self.blocks), refresh_epochs)
        self.steps = 0
        self._mode: str | None = None
        self.gram_paths: dict[str, str] = {}
        self.last_solve: SolveReport | None = None
        self.counts = {"inversion": 0, "weighted_sum": 0, "gram": 0, "solve": 0}
        self._state: StepState | None = None  # this step's, between prepare() and step()

    # -- the step --------------------------------------------------------------------
    @property
    def mode(self) -> str | None:
        """What the last step did: "inversion" or "weighted_sum" (None before any)."""
        return self._mode

    @property
    def state(self) -> StepState | None:
        """This step's transient state: None until ``prepare()`` or a backward pass makes it."""
        return self._state

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this preconditioner reports (exact NGD: the inversion's)."""
        return NGD_PHASES if self.share == "none" else FNGD_PHASES

    def epoch(self, epoch: int | None = None) -> int:
        if epoch is not None:
            return epoch
        if self.steps_per_epoch:
            return self.steps // self.steps_per_epoch
        if self.refresh_epochs is not None:
            raise ValueError("refresh_epochs needs steps_per_epoch or an explicit epoch")
        return 0

    def _iteration(self) -> int:
        assert self.steps_per_epoch
        return self.steps % self.steps_per_epoch

    def _stored(
        self, sample_ids: torch.Tensor | None, epoch: int, n: int | None
    ) -> tuple[torch.Tensor, np.ndarray] | None:
        """This batch's stored coefficients (blocks, N) and which blocks have them."""
        if self.share == "none" or not self.blocks:
            return None
        if self.share == "iteration":
            return self.iteration_table.lookup(self._iteration(), n, epoch)
        if sample_ids is None:
            raise ValueError(
                'share="sample" needs sample_ids (dataset indices of the batch) at every step'
            )
        return self.sample_table.lookup(_host_ids(sample_ids), epoch)

    def discard(self) -> None:
        """Drop what a backward pass left for ``step()`` (e.g. a backward not followed by one)."""
        self._state = None

    def step_state(self) -> StepState:
        """This step's state; the first backward creates it when ``prepare()`` did not."""
        state = self._state
        if state is None:
            state = self._state = StepState()
        return state

    def prepare(self, sample_ids: torch.Tensor | None = None, epoch: int | None = None) -> None:
        """Announce the next batch; with known coefficients the weighted sum runs in backward.

        Anything a previous backward left without a ``step()`` is dropped.
        """
        self.discard()
        if self.share == "sample" and sample_ids is None:
            return
        if sample_ids is not None:
            sample_ids = _host_ids(sample_ids)
        n = None if sample_ids is None else len(sample_ids)
        with phase(FNGD_WEIGHTED_SUM):
            stored = self._stored(sample_ids, self.epoch(epoch), n)
            if stored is not None:
                coeffs, known = stored
                dtype = self._dtype
                scales = torch.mul(coeffs, coeffs.shape[1])
                if scales.dtype != dtype:
                    scales = scales.to(dtype)
                scales = scales.unsqueeze(-1).unbind(0)
                self._state = StepState(
                    sample_ids=sample_ids,
                    scales=scales
                    if known.all()
                    else tuple(s if k else None for s, k in zip(scales, known, strict=True)),
                )

    @torch.no_grad()
    def step(self, sample_ids: torch.Tensor | None = None, epoch: int | None = None) -> None:
        """Write each block's natural gradient into ``.grad`` (accumulating like autograd).

        Blocks whose coefficients were known before the backward pass already have it;
        the others' (input, output-gradient) pairs are turned into it here, inverting
        where no stored coefficient fits.
        """
        ep = self.epoch(epoch)
        state, self._state = self._state, None  # dropped whatever happens next
        if state is not None:
            self._finish(state, sample_ids, ep)
        self.steps += 1

    def _finish(self, state: StepState, sample_ids: torch.Tensor | None, epoch: int) -> None:
        """The gradients of the blocks the backward pass left to ``step()``; the mode."""
        summed = state.summed
        prepared = state.sample_ids
        if (
            summed
            and sample_ids is not None
            and prepared is not None
            and sample_ids is not prepared
            and not torch.equal(_host_ids(sample_ids), prepared)
        ):
            raise RuntimeError(
                "step() got other sample_ids than prepare(): the weighted sum "
                "already used the prepared batch's coefficients"
            )
        stashed = sorted(state.stash, key=_index) if state.stash else []
        inverted = self._step_from_stash(stashed, state, sample_ids, epoch) if stashed else False
        if summed or stashed:
            self._mode = "inversion" if inverted else "weighted_sum"
            self.counts[self._mode] += 1
            if self.check_finite and not inverted:
                self._check_finite(sorted({*summed, *stashed}, key=_index))

    def _step_from_stash(
        self,
        stashed: list[Block],
        state: StepState,
        sample_ids: torch.Tensor | None,
        epoch: int,
    ) -> bool:
        """Weighted sums for the stashed blocks; returns whether any of them inverted."""
        pairs = {}
        for b in stashed:
            if len(state.stash[b]) > 1:
                raise RuntimeError(
                    f"module {b.name!r} ran more than one forward/backward before step() "
                    "(weight sharing or gradient accumulation); add it to skip_layers, or "
                    "call discard() after a backward pass that is not followed by step()"
                )
            pairs[b] = state.stash[b][0]
        n = pairs[stashed[0]][0].shape[0]
        stored = self._stored(sample_ids, epoch, n)
        known = np.zeros(len(self.blocks), dtype=bool) if stored is None else stored[1]
        invert = [b for b in stashed if not known[b.index]]
        coeffs = None if stored is None else stored[0]
        if invert:
            fresh = self._invert(invert, pairs, n)
            self._store(fresh, sample_ids, epoch, [b.index for b in invert])
            coeffs = fresh if coeffs is None else torch.where(
                torch.as_tensor(known, device=fresh.device).unsqueeze(1), coeffs.to(fresh), fresh
            )
        assert coeffs is not None
        with phase(FNGD_WEIGHTED_SUM):
            scales = (coeffs * n).unsqueeze(-1)
            for b in stashed:
                x, grad_out = pairs[b]
                grads = b.weighted_grads(x, grad_out, scales[b.index].to(grad_out.dtype))
                for p, g in zip(b.params, grads, strict=False):
                    _accumulate(p, g)
        return bool(invert)

    def _invert(
        self,
        active: list[Block],
        pairs: dict[Block, tuple[torch.Tensor, torch.Tensor]],
        n: int,
    ) -> torch.Tensor:
        """Gram matrices and the damped solve for ``active``; (all blocks, N) coefficients."""
        dtype = _solve_dtype(pairs[active[0]][1].dtype)
        grams = []
        with phase(FNGD_GRAM):
            for b in active:
                x, grad_out = pairs[b]
                a, d = b.gram_operands(x, grad_out)
                a, d = a.to(dtype), d.to(dtype)
                if self.loss_reduction == "mean":
                    d = d * n  # the hook saw delta_i / N
                path = self._gram_path(b, a, d)
                grams.append(gram_mod.gram(a, d, path))
            self.counts["gram"] += 1
        with phase(FNGD_SOLVE):
            c, report = damped_solve(
                torch.stack(grams), n * self.damping, names=[b.name for b in active]
            )
            self.counts["solve"] += 1
        self.last_solve = report
        full = c.new_zeros(len(self.blocks), n)
        full[[b.index for b in active]] = c
        return full

    def _gram_path(self, block: Block, a: torch.Tensor, d: torch.Tensor) -> str:
        if self.gram != "auto":
            path = self.gram
        else:
            n, t, p = a.shape
            path = gram_mod.choose(n, t, p, d.shape[-1])
        self.gram_paths[block.name] = path
        return path

    def _store(
        self, coeffs: torch.Tensor, sample_ids: torch.Tensor | None, epoch: int, blocks: list[int]
    ) -> None:
        if self.share == "sample":
            assert sample_ids is not None
            self.sample_table.store(_host_ids(sample_ids), coeffs, epoch, blocks)
        elif self.share == "iteration":
            self.iteration_table.store(self._iteration(), coeffs, epoch, blocks)

    def _check_finite(self, active: list[Block]) -> None:
        # A sum is finite iff every element is (short of overflow), and summing is far
        # cheaper than isfinite().all() on the CPU; one synchronisation for all blocks.
        zero = torch.zeros((), device=active[0].module.weight.device)
        sums = torch.stack(
            [sum((p.grad.float().sum() for p in b.params if p.grad is not None), zero)
             for b in active]
        )
        flags = torch.isfinite(sums).cpu()
        bad = [b.name for b, ok in zip(active, flags.tolist(), strict=True) if not ok]
        if bad:
            raise NonFiniteGradientError(
                f"non-finite gradient (NaN or inf) in block(s) {', '.join(bad)}"
            )

    # -- bookkeeping -----------------------------------------------------------------
    def reset_coefficients(self) -> None:
        """Forget every stored coefficient: the next steps run the inversion phase again."""
        self.sample_table = SampleTable(len(self.blocks), self.refresh_epochs)
        self.iteration_table = IterationTable(len(self.blocks), self.refresh_epochs)

    def memory_usage(self) -> dict[str, int]:
        """Bytes of the coefficient tables."""
        return {"coefficients": self.sample_table.nbytes() + self.iteration_table.nbytes()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "share": self.share,
            "blocks": [b.name for b in self.blocks],
            "sample_table": self.sample_table.state_dict(),
            "iteration_table": self.iteration_table.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [b.name for b in self.blocks]
        if state["blocks"] != names:
            raise ValueError(f"state is for blocks {state['blocks']}, this model has {names}")
        if state["share"] != self.share:
            raise ValueError(f"state is for share={state['share']!r}, this is {self.share!r}")
        device = self.blocks[0].module.weight.device if self.blocks else None
        self.steps = int(state["steps"])
        self.sample_table.load_state_dict(state["sample_table"], device)
        self.iteration_table.load_state_dict(state["iteration_table"], device)

    def remove(self) -> None:
        """Give the modules their own forward (and plain gradients) back."""
        for b in self.blocks:
            b.remove()
        self.blocks = []
        self._state = None

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def __repr__(self) -> str:
        return (
            f"FNGD(blocks={len(self.blocks)}, damping={self.damping}, share={self.share!r}, "
            f"refresh_epochs={self.refresh_epochs}, loss_reduction={self.loss_reduction!r})"
        )


def _index(block: Block) -> int:
    return block.index


def _host_ids(sample_ids: torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(sample_ids)
    if ids.device.type == "cpu" and ids.dtype == torch.int64 and ids.dim() == 1:
        return ids
    return ids.detach().to("cpu", torch.int64).reshape(-1)


def _solve_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _accumulate(p: torch.Tensor, g: torch.Tensor | None) -> None:
    if g is None:
        return
    if p.grad is None:
        p.grad = g.to(p.dtype)
    else:
        p.grad.add_(g)
