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

With ``scope="network"`` one vector serves every block: ``K = sum_b K_b``, one solve,
block b's gradient ``G_b c`` -- exact damped NGD of the whole parameter vector -- and a
later step can be a plain backward of the reweighted loss (``reweight``).

Usage, in kfac-pytorch's pattern::

    pre = FNGD(model, damping=1e-3, share="sample")
    pre.prepare(sample_ids=idx)        # optional: the weighted sum then runs inside backward
    loss.backward(); pre.step(sample_ids=idx); optimizer.step()

and, with ``scope="network"``, a later epoch's step at SGD's cost::

    pre.prepare(sample_ids=idx)
    reweighted = pre.reweight(idx)     # False when this batch must invert
    losses = per_sample_loss(model(x), y)
    (pre.reweighted_loss(losses) if reweighted else losses.mean()).backward()
    pre.step(sample_ids=idx); optimizer.step()

(``pre.loss_weights(idx)`` gives the weights ``w = N c`` themselves, for ``(w * l).mean()``.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fngd import damping as damping_mod
from fngd import gram as gram_mod
from fngd import solve as solve_mod
from fngd.blocks import Block, block_type
from fngd.coefficients import IterationTable, SampleTable
from fngd.phases import FNGD as FNGD_PHASES
from fngd.phases import FNGD_GRAM, FNGD_SOLVE, FNGD_WEIGHTED_SUM, phase
from fngd.phases import NGD as NGD_PHASES
from fngd.solve import DAMPING_MODES, NonFiniteGradientError, SolveReport, damped_solve
from fngd.staleness import Staleness, compare, unknown
from fngd.step_state import Pair, SharedScale, StepState

Share = Literal["none", "sample", "iteration"]
SHARES = ("none", "sample", "iteration")
Scope = Literal["layer", "network"]
SCOPES = ("layer", "network")
#: The key of the whole network's vector (network scope) and of the concatenated directions.
NETWORK = "network"
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
            parameters (norms, embeddings, skipped layers) get the plain gradient of the
            loss that was backpropagated, in either scope and phase: of the mean loss in
            the ``prepare / backward / step`` pattern, and of the reweighted loss -- the
            weighted sum ``G c`` -- when the caller reweights it (``loss_weights``).
        damping: ``lambda`` in ``(F + lambda I)^-1``: a float, a schedule ``f(step) ->
            float`` of the step count at the solve, or a text spec (``fngd.damping``).
        scope: ``"layer"``: one coefficient vector per block (the block-diagonal Fisher);
            ``"network"``: one vector for the whole network, ``K = sum_b K_b`` over the
            blocks that ran, one solve, block b's gradient ``G_b c`` (the whole parameter
            vector's damped NGD). The tables then hold one row, which every block reuses,
            also a block that did not run (a branch not taken) when the vector was solved.
        damping_mode: ``"constant"`` shifts K by ``N lambda``; ``"relative"`` by
            ``lambda trace(K) / N`` (per block; in network scope of the summed K), so
            scaling the loss by s scales the natural gradient by exactly 1/s.
        normalize: rescale each solved vector to ``sum_i c_i = 1`` before it is used and
            stored: a step is then a weighted average of per-sample gradients, as SGD's
            mean is, its size set by the learning rate.
        grad_scaler: a ``torch.amp.GradScaler`` or a callable returning the current loss
            scale S (kfac-pytorch's convention): the Gram from scaled output gradients is
            divided by S^2 so the damping stays ``lambda``; the gradients stay scaled by S
            for the scaler to unscale. A non-finite Gram (an overflow the scaler will skip)
            then writes the plain, non-finite gradient and stores nothing, not an error.
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
        damping: float | str | Callable[[int], float] = 1e-3,
        share: Share = "sample",
        scope: Scope = "layer",
        damping_mode: str = "constant",
        normalize: bool = False,
        grad_scaler: Any = None,
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
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
        if damping_mode not in DAMPING_MODES:
            raise ValueError(
                f"unknown damping_mode {damping_mode!r}; valid: {', '.join(DAMPING_MODES)}"
            )
        self.damping = damping_mod.resolve(damping)
        if share == "iteration" and not steps_per_epoch:
            raise ValueError('share="iteration" needs steps_per_epoch')
        if refresh_epochs is not None and refresh_epochs < 1:
            raise ValueError(f"refresh_epochs must be >= 1 or None, got {refresh_epochs}")
        self.share: Share = share
        self.scope: Scope = scope
        self.damping_mode = damping_mode
        self.normalize = normalize
        self.grad_scaler = grad_scaler
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

        self._params = list(model.parameters())  # whose .grad a staleness probe keeps
        self._dtype = self.blocks[0].module.weight.dtype if self.blocks else torch.float32
        #: Table row of each block: its own (layer scope) or the one shared row (network).
        self._rows = [b.index if scope == "layer" else 0 for b in self.blocks]
        self._num_rows = len(self.blocks) if scope == "layer" else min(len(self.blocks), 1)
        self.sample_table = SampleTable(self._num_rows, refresh_epochs)
        self.iteration_table = IterationTable(self._num_rows, refresh_epochs)
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
        state, self._state = self._state, None
        if state is not None and state.reweighted:
            self._set_plain(False)

    def _set_plain(self, plain: bool) -> None:
        for b in self.blocks:
            b.set_plain(plain)

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
        if self._state is not None:
            self.discard()
        if self.share == "sample" and sample_ids is None:
            return
        if sample_ids is not None:
            sample_ids = _host_ids(sample_ids)
        n = None if sample_ids is None else len(sample_ids)
        with phase(FNGD_WEIGHTED_SUM):
            if self.scope == "network" and self.share == "sample" and self.blocks:
                # a later epoch's common case, in one gather (``SampleTable.lookup_row``)
                c = self.sample_table.lookup_row(sample_ids)
                if c is not None:
                    self._state = StepState(
                        sample_ids=sample_ids, scales=SharedScale(c, self._dtype), coefficients=c
                    )
                    return
            stored = self._stored(sample_ids, self.epoch(epoch), n)
            if stored is None:
                return
            coeffs, known = stored
            dtype = self._dtype
            if self.scope == "network":  # one row, known (else no lookup): every block's
                c = coeffs.view(-1)
                self._state = StepState(
                    sample_ids=sample_ids, scales=SharedScale(c, dtype), coefficients=c
                )
                return
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

    def reweight(self, sample_ids: torch.Tensor | None = None) -> bool:
        """Switch this step to a reweighted loss if it can be one; whether it did.

        Network scope, after ``prepare()`` found this batch's coefficients: True, and the
        step is *reweighted*: the blocks run their module's own op, nothing custom runs in
        backward, and ``step()`` only keeps its books. Backpropagate
        ``reweighted_loss(l)`` (``l``: per-sample losses whose mean, resp. sum, is the
        ordinary batch loss); its gradient is the FNGD gradient of every block (and ``G c``
        for other parameters). False, changing nothing, in layer scope, for
        ``share="none"``, before ``prepare()`` or when the batch must invert: then
        backpropagate the ordinary loss. ``sample_ids``, when given, must be the prepared
        ones. Call it before the forward pass.
        """
        state = self._state
        if state is None or state.coefficients is None:
            return False
        prepared = state.sample_ids
        if (
            sample_ids is not None
            and prepared is not None
            and sample_ids is not prepared
            and not torch.equal(_host_ids(sample_ids), prepared)
        ):
            raise RuntimeError("reweight() got other sample_ids than prepare()")
        if not state.reweighted:
            state.reweighted = True
            state.scales = None  # a block function already in the graph must not scale again
            self._set_plain(True)
        return True

    def loss_weights(self, sample_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """``reweight()``, returning the per-sample loss weights ``w = N c`` (N,), or None.

        ``w`` is detached, in the parameters' dtype and on their device. Reduce ``w * l`` as
        the loss is reduced: ``(w * l).mean()`` for ``loss_reduction="mean"``,
        ``(w * l).sum()`` for ``"sum"`` (``reweighted_loss(l)`` computes the same in one op).
        """
        if not self.reweight(sample_ids):
            return None
        state = self._state
        assert state is not None and state.coefficients is not None
        if state.weights is None:
            c = state.coefficients
            state.weights = torch.mul(c, len(c)).to(self._dtype)
        return state.weights

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The reweighted batch loss of per-sample ``losses`` (N,), after ``reweight()``.

        ``(w * losses).mean()`` for ``loss_reduction="mean"`` (``.sum()`` for ``"sum"``)
        computed as one dot product, ``sum_i c_i l_i`` (``sum_i N c_i l_i``): one autograd
        node instead of two, which is most of what a reweighted step adds to an SGD step.
        """
        state = self._state
        if state is None or not state.reweighted or state.coefficients is None:
            raise RuntimeError("reweighted_loss() needs reweight() to have returned True")
        weights = state.coefficients
        if self.loss_reduction == "sum":
            weights = weights * len(weights)
        if weights.dtype != losses.dtype:
            weights = weights.to(losses.dtype)
        return losses @ weights

    @torch.no_grad()
    def step(self, sample_ids: torch.Tensor | None = None, epoch: int | None = None) -> None:
        """Write each block's natural gradient into ``.grad`` (accumulating like autograd).

        Blocks whose coefficients were known before the backward pass already have it;
        the others' (input, output-gradient) pairs are turned into it here, inverting
        where no stored coefficient fits.
        """
        state, self._state = self._state, None  # dropped whatever happens next
        if state is not None:
            if state.reweighted:
                self._finish_reweighted(state, sample_ids)
            else:
                self._finish(state, sample_ids, self.epoch(epoch))
        self.steps += 1

    def _check_prepared_ids(self, state: StepState, sample_ids: torch.Tensor | None) -> None:
        prepared = state.sample_ids
        if (
            sample_ids is not None
            and prepared is not None
            and sample_ids is not prepared
            and not torch.equal(_host_ids(sample_ids), prepared)
        ):
            raise RuntimeError(
                "step() got other sample_ids than prepare(): the weighted sum "
                "already used the prepared batch's coefficients"
            )

    def _finish(self, state: StepState, sample_ids: torch.Tensor | None, epoch: int) -> None:
        """The gradients of the blocks the backward pass left to ``step()``; the mode."""
        summed = state.summed
        if summed:
            self._check_prepared_ids(state, sample_ids)
        stashed = sorted(state.stash, key=_index) if state.stash else []
        inverted = self._step_from_stash(stashed, state, sample_ids, epoch) if stashed else False
        if summed or stashed:
            self._mode = "inversion" if inverted else "weighted_sum"
            self.counts[self._mode] += 1
            if self.check_finite and not inverted:
                self._check_finite(sorted({*summed, *stashed}, key=_index))

    def _finish_reweighted(self, state: StepState, sample_ids: torch.Tensor | None) -> None:
        """A reweighted step: the loss carried ``N c``, so autograd's gradients are FNGD's.

        A block whose forward ran before ``reweight()`` stashed its pair: its plain
        weight gradient (unit scale) is the reweighted loss's.
        """
        self._set_plain(False)
        self._check_prepared_ids(state, sample_ids)
        for b, pairs in state.stash.items():
            for x, grad_out in pairs:
                ones = grad_out.new_ones(grad_out.shape[0], 1)
                for p, g in zip(b.params, b.weighted_grads(x, grad_out, ones), strict=False):
                    _accumulate(p, g)
        self._mode = "weighted_sum"
        self.counts["weighted_sum"] += 1
        if self.check_finite:
            self._check_finite(self.blocks)

    def _step_from_stash(
        self,
        stashed: list[Block],
        state: StepState,
        sample_ids: torch.Tensor | None,
        epoch: int,
    ) -> bool:
        """Weighted sums for the stashed blocks; returns whether any of them inverted."""
        pairs = _single_pairs(stashed, state.stash)
        n = pairs[stashed[0]][0].shape[0]
        stored = self._stored(sample_ids, epoch, n)
        rows = self._rows
        known = np.zeros(self._num_rows, dtype=bool) if stored is None else stored[1]
        invert = [b for b in stashed if not known[rows[b.index]]]
        coeffs = None if stored is None else stored[0]
        if invert:
            try:
                fresh = self._invert(invert, pairs, n)
            except NonFiniteGradientError:
                if self.grad_scaler is None:
                    raise
                self._write_plain(stashed, pairs)  # an overflow: the scaler skips this step
                return True
            self._store(fresh, sample_ids, epoch, sorted({rows[b.index] for b in invert}))
            coeffs = fresh if coeffs is None else torch.where(
                torch.as_tensor(known, device=fresh.device).unsqueeze(1), coeffs.to(fresh), fresh
            )
        assert coeffs is not None
        with phase(FNGD_WEIGHTED_SUM):
            scales = (coeffs * n).unsqueeze(-1)
            for b in stashed:
                x, grad_out = pairs[b]
                grads = b.weighted_grads(x, grad_out, scales[rows[b.index]].to(grad_out.dtype))
                for p, g in zip(b.params, grads, strict=False):
                    _accumulate(p, g)
        return bool(invert)

    def _write_plain(self, blocks: list[Block], pairs: dict[Block, Pair]) -> None:
        for b in blocks:
            x, grad_out = pairs[b]
            ones = grad_out.new_ones(grad_out.shape[0], 1)
            for p, g in zip(b.params, b.weighted_grads(x, grad_out, ones), strict=False):
                _accumulate(p, g)

    def _invert(self, active: list[Block], pairs: dict[Block, Pair], n: int) -> torch.Tensor:
        """Gram matrices and the damped solve for ``active``; (table rows, N) coefficients."""
        with phase(FNGD_GRAM):
            grams = self._grams(active, pairs, n)
            self.counts["gram"] += 1
        with phase(FNGD_SOLVE):
            c, report = self._solve(grams, [b.name for b in active])
            self.counts["solve"] += 1
        self.last_solve = report
        if self.scope == "network":
            return c
        full = c.new_zeros(len(self.blocks), n)
        full[[b.index for b in active]] = c
        return full

    def _grams(self, active: list[Block], pairs: dict[Block, Pair], n: int) -> torch.Tensor:
        """``K_b`` (len(active), N, N) of the per-sample losses, unscaled by the loss scale."""
        dtype = _solve_dtype(pairs[active[0]][1].dtype)
        unscale = None if self.grad_scaler is None else 1.0 / _loss_scale(self.grad_scaler)
        grams = []
        for b in active:
            x, grad_out = pairs[b]
            a, d = b.gram_operands(x, grad_out)
            a, d = a.to(dtype), d.to(dtype)
            if self.loss_reduction == "mean":
                d = d * n  # the hook saw delta_i / N
            if unscale is not None:
                d = d * unscale  # K / S^2: the damping stays lambda under a scaled loss
            path = self._gram_path(a, d)
            self.gram_paths[b.name] = path
            grams.append(gram_mod.gram(a, d, path))
        return torch.stack(grams)

    def _solve(self, grams: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, SolveReport]:
        """``c`` per block (layer scope) or of the summed Gram (network: one row)."""
        if self.scope == "network":
            grams, names = grams.sum(0, keepdim=True), [NETWORK]
        lam = damping_mod.at(self.damping, self.steps)
        c, report = damped_solve(grams, solve_mod.shift(grams, lam, self.damping_mode), names)
        if self.normalize:
            c = c / c.sum(-1, keepdim=True)
        return c, report

    def _gram_path(self, a: torch.Tensor, d: torch.Tensor) -> str:
        if self.gram != "auto":
            return self.gram
        n, t, p = a.shape
        return gram_mod.choose(n, t, p, d.shape[-1])

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

    # -- staleness ---------------------------------------------------------------------
    def staleness(
        self, sample_ids: torch.Tensor | None = None, *, iteration: int | None = None
    ) -> Staleness:
        """A probe: how far the stored coefficients' direction is from a fresh solve.

        ::

            with pre.staleness(ids) as probe:
                loss_fn(model(x_probe), y_probe).backward()
            probe.result  # key -> {"cosine", "norm_ratio", "known"}

        Inside, the blocks keep (input, grad_output) as in the inversion phase; nothing
        reaches ``.grad`` (every parameter's is restored), the tables, the step count, the
        mode or the counts. On exit the probe batch's direction ``sum_i c_i g_i`` from the
        stored coefficients (``share="sample"``: by ``sample_ids``; ``"iteration"``: those
        stored for ``iteration``, an index within the epoch) is compared with a fresh solve
        on the same batch and weights, with the damping (strategy, schedule at the current
        step, loss scale) a solve would use now. Keys: each block's name and ``"network"``
        (the concatenated directions) in layer scope, ``"network"`` in network scope.
        ``known`` is False, and ``cosine`` and ``norm_ratio`` None, where some id (or the
        iteration) has no stored coefficient, and always for ``share="none"``.
        """
        if self.share == "sample" and sample_ids is None:
            raise ValueError('share="sample" needs the probe batch\'s sample_ids')
        if self.share == "iteration" and iteration is None:
            raise ValueError('share="iteration" needs the iteration whose coefficients to probe')
        return Staleness(self, sample_ids, iteration)

    def _begin_probe(self) -> tuple[StepState | None, list[torch.Tensor | None]]:
        """Set the step aside: an empty state (every block stashes), no ``.grad``."""
        saved = (self._state, [p.grad for p in self._params])
        for p in self._params:
            p.grad = None
        self._state = StepState()
        if saved[0] is not None and saved[0].reweighted:
            self._set_plain(False)
        return saved

    def _end_probe(
        self, saved: tuple[StepState | None, list[torch.Tensor | None]]
    ) -> dict[Block, list[Pair]]:
        """Put the step back as it was; the probe's stash."""
        probe = self.step_state()
        self._state, grads = saved
        for p, g in zip(self._params, grads, strict=True):
            p.grad = g
        if self._state is not None and self._state.reweighted:
            self._set_plain(True)
        return probe.stash

    @torch.no_grad()
    def _probe(
        self,
        stash: dict[Block, list[Pair]],
        sample_ids: torch.Tensor | None,
        iteration: int | None,
    ) -> dict[str, dict[str, Any]]:
        """Stored against fresh directions for the probe batch, per key (``staleness``)."""
        blocks = sorted(stash, key=_index)
        if not blocks:
            return {}
        pairs = _single_pairs(blocks, stash)
        n = pairs[blocks[0]][0].shape[0]
        fresh, _ = self._solve(self._grams(blocks, pairs, n), [b.name for b in blocks])
        stored, known = self._probe_stored(sample_ids, iteration, n)
        rows = self._rows
        fresh_dirs, stored_dirs = {}, {}
        for j, b in enumerate(blocks):
            row = rows[b.index]
            fresh_dirs[b.name] = _direction(b, pairs[b], fresh[0 if self.scope == "network" else j])
            if stored is not None and known[row]:
                stored_dirs[b.name] = _direction(b, pairs[b], stored[row])
        names = [b.name for b in blocks]
        result = {}
        if self.scope == "layer":
            for name in names:
                s = stored_dirs.get(name)
                result[name] = unknown() if s is None else compare(s, fresh_dirs[name])
        whole = torch.cat([fresh_dirs[k] for k in names])
        if len(stored_dirs) == len(names):
            result[NETWORK] = compare(torch.cat([stored_dirs[k] for k in names]), whole)
        else:
            result[NETWORK] = unknown()
        return result

    def _probe_stored(
        self, sample_ids: torch.Tensor | None, iteration: int | None, n: int
    ) -> tuple[torch.Tensor | None, np.ndarray]:
        none = np.zeros(self._num_rows, dtype=bool)
        if self.share == "none":
            return None, none
        if self.share == "iteration":
            assert iteration is not None
            found = self.iteration_table.lookup(iteration, n, self.epoch())
        else:
            assert sample_ids is not None
            found = self.sample_table.lookup(_host_ids(sample_ids), self.epoch())
        return (None, none) if found is None else found

    # -- bookkeeping -----------------------------------------------------------------
    def reset_coefficients(self) -> None:
        """Forget every stored coefficient: the next steps run the inversion phase again."""
        self.sample_table = SampleTable(self._num_rows, self.refresh_epochs)
        self.iteration_table = IterationTable(self._num_rows, self.refresh_epochs)

    def memory_usage(self) -> dict[str, int]:
        """Bytes of the coefficient tables."""
        return {"coefficients": self.sample_table.nbytes() + self.iteration_table.nbytes()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "share": self.share,
            "scope": self.scope,
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
        scope = state.get("scope", "layer")
        if scope != self.scope:
            raise ValueError(f"state is for scope={scope!r}, this is {self.scope!r}")
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
            f"scope={self.scope!r}, "
            f"refresh_epochs={self.refresh_epochs}, loss_reduction={self.loss_reduction!r})"
        )


def _index(block: Block) -> int:
    return block.index


def _single_pairs(blocks: list[Block], stash: dict[Block, list[Pair]]) -> dict[Block, Pair]:
    """Each block's one (input, grad_output) pair; two mean a module ran twice."""
    pairs = {}
    for b in blocks:
        if len(stash[b]) > 1:
            raise RuntimeError(
                f"module {b.name!r} ran more than one forward/backward before step() "
                "(weight sharing or gradient accumulation); add it to skip_layers, or "
                "call discard() after a backward pass that is not followed by step()"
            )
        pairs[b] = stash[b][0]
    return pairs


def _loss_scale(grad_scaler: Any) -> float:
    """The current loss scale of a ``GradScaler`` (``get_scale()``) or of a callable."""
    get = getattr(grad_scaler, "get_scale", None)
    return float(get() if get is not None else grad_scaler())


def _host_ids(sample_ids: torch.Tensor) -> torch.Tensor:
    if (
        isinstance(sample_ids, torch.Tensor)
        and sample_ids.is_cpu
        and sample_ids.dtype is torch.int64
        and sample_ids.ndim == 1
    ):
        return sample_ids  # the loaders' ids, as they are
    return torch.as_tensor(sample_ids).detach().to("cpu", torch.int64).reshape(-1)


def _direction(block: Block, pair: Pair, coeffs: torch.Tensor) -> torch.Tensor:
    """``sum_i c_i g_i`` of ``block`` (weight, then bias), flattened, in float64."""
    x, grad_out = pair
    scale = (coeffs * len(coeffs)).unsqueeze(-1).to(grad_out.dtype)
    grads = block.weighted_grads(x, grad_out, scale)
    return torch.cat([g.flatten() for g in grads if g is not None]).double()


def _solve_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _accumulate(p: torch.Tensor, g: torch.Tensor | None) -> None:
    if g is None:
        return
    if p.grad is None:
        p.grad = g.to(p.dtype)
    else:
        p.grad.add_(g)
