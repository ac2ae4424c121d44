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
from fngd import distributed as dist_mod
from fngd import gram as gram_mod
from fngd import solve as solve_mod
from fngd.blocks import Block, block_type
from fngd.blocks import native as native_blocks
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
#: How the inversion phase runs under ``DistributedDataParallel`` (``FNGD``'s ``distributed``).
DISTRIBUTED = ("global", "local")
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
        distributed: the inversion phase under ``DistributedDataParallel`` (pass the DDP
            model; see "Under DistributedDataParallel" below): ``"global"`` solves with the
            Gram matrix of the whole global batch -- the operands the Gram needs are
            gathered from every rank -- so a step equals single-process FNGD on the ranks'
            batches concatenated in rank order; ``"local"``: each rank solves for its own
            samples only (no operand gathered; block-diagonal across ranks), and the
            directions are averaged as DDP averages gradients.
        process_group: the ranks to communicate with (default: the DDP model's group).
        native: the weighted-sum phase of layer scope through compiled blocks
            (``fngd.blocks.native``: ``"auto"`` where they build, ``"on"`` or ``"off"``);
            the same gradients, without the Python block function's per-layer cost. Its
            weighted sums run inside autograd's backward: traces show them as
            ``fngd/weighted_sum`` ranges there, records count them as ``backward``.

    Under DistributedDataParallel (``FNGD(ddp_model)``): the blocks are the inner module's
    (the same names as without DDP), and ``prepare(sample_ids)`` is required before every
    forward pass, with the rank's own ids (global dataset ids), because it decides whether
    DDP's reducer runs:

    - weighted-sum phase: every coefficient is known before backward, so the blocks return
      their weighted gradients from backward and DDP all-reduces them as it does SGD's --
      one gradient all-reduce, overlapped with backward; FNGD itself sends nothing (a
      reweighted step, ``reweight()``, is a plain DDP backward);
    - inversion phase: the step runs with DDP's reducer off (``no_sync``): the gradients
      exist only after ``step()`` has solved, so ``step()`` gathers what the solve needs and
      then averages every parameter's gradient in one all-reduce of its own.

    Coefficients are kept as the global batch's: each rank's weighted sum is scaled by the
    world size so that DDP's average is the sum over the global batch. With
    ``share="sample"`` every rank stores every rank's coefficients, keyed by global sample
    id, so a distributed sampler that reshuffles samples across ranks finds them in later
    epochs. Every rank must take the same phase at every step (the collectives must match):
    true when every global batch of an epoch holds fresh samples on every rank, as with
    ``bench.workloads.loader.TensorLoader``'s ``rank``/``world_size`` split (a sampler that
    pads a short epoch with repeated samples can break it).

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
        distributed: str = "global",
        process_group: Any = None,
        native: str = "auto",
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
        if distributed not in DISTRIBUTED:
            raise ValueError(
                f"unknown distributed {distributed!r}; valid: {', '.join(DISTRIBUTED)}"
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
        self.distributed = distributed
        model, ddp = dist_mod.unwrap(model)
        #: DDP's sync switch and FNGD's own collectives (None without DDP).
        self.comm = None if ddp is None else dist_mod.Comm(process_group, ddp)
        self._world = 1 if self.comm is None else self.comm.world_size
        self._prepared = False  # under DDP: prepare() ran for the coming step
        self._unsynced = False  # under DDP: this step's backward runs without DDP's reducer

        found = [
            (name, module, cls)
            for name, module in model.named_modules()
            if (cls := block_type(module)) is not None
            and not _matches(self.skip_layers, name, module)
            and module.weight.requires_grad
        ]
        # Only layer scope's weighted sum runs through blocks that know their scales at
        # their forward (network scope's is a reweighted loss; exact NGD has none).
        native_blocks.check(native)
        kernels = None
        if found and scope == "layer" and share != "none":
            kernels = native_blocks.kernels(native)
        #: Whether the compiled weighted-sum blocks run ("on") or the Python ones ("off").
        self.native = "off" if kernels is None else "on"
        self.blocks: list[Block] = [
            cls(name, module, self, i, kernels) for i, (name, module, cls) in enumerate(found)
        ]

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
        self._state = None
        if self.comm is not None:
            self._end_distributed_step()

    def step_state(self) -> StepState:
        """This step's state; the first backward creates it when ``prepare()`` did not."""
        state = self._state
        if state is None:
            state = self._state = StepState()
        return state

    def prepare(self, sample_ids: torch.Tensor | None = None, epoch: int | None = None) -> None:
        """Announce the next batch; with known coefficients the weighted sum runs in backward.

        Anything a previous backward left without a ``step()`` is dropped. Under DDP it also
        decides whether DDP's reducer runs in the coming backward pass (the class docstring).
        """
        if self._state is not None:
            self.discard()
        self._lookup(sample_ids, epoch)
        comm = self.comm
        if comm is not None:
            self._prepared = True
            self._unsynced = not self._known_before_backward()
            comm.sync(not self._unsynced)

    def _known_before_backward(self) -> bool:
        """Whether every block's coefficients are known for the prepared batch."""
        state = self._state
        if state is None:
            return False
        if state.coefficients is not None:  # network scope
            return True
        scales = state.scales
        return isinstance(scales, tuple) and all(s is not None for s in scales)

    def _lookup(self, sample_ids: torch.Tensor | None, epoch: int | None) -> None:
        """``prepare()``'s lookup: this step's state when the batch's coefficients are known."""
        if self.share == "sample" and sample_ids is None:
            return
        if sample_ids is not None:
            sample_ids = _host_ids(sample_ids)
        with phase(FNGD_WEIGHTED_SUM):
            columns = known = None
            if self.share == "sample" and self.blocks and len(sample_ids):
                # a later epoch's common case, in one gather (``SampleTable.lookup_known``)
                columns = self.sample_table.lookup_known(sample_ids)
            if columns is None:
                n = None if sample_ids is None else len(sample_ids)
                stored = self._stored(sample_ids, self.epoch(epoch), n)
                if stored is None:
                    return
                columns, known = stored[0].t().unsqueeze(-1), stored[1]
            self._state = self._known_state(sample_ids, columns, known)

    def _known_state(
        self, sample_ids: torch.Tensor | None, columns: torch.Tensor, known: np.ndarray | None
    ) -> StepState:
        """A step whose stored coefficients, as columns (N, rows, 1), are known before
        backward, for the rows ``known`` marks (None: all)."""
        if self.scope == "network":  # one row, known (else no lookup): every block's
            c = columns.view(-1)
            return StepState(
                sample_ids=sample_ids,
                scales=SharedScale(c, self._dtype, self._world),
                coefficients=c,
            )
        scales = torch.mul(columns, len(columns) * self._world)
        if scales.dtype != self._dtype:
            scales = scales.to(self._dtype)
        scales = scales.unbind(1)
        if known is not None and not known.all():
            scales = tuple(s if k else None for s, k in zip(scales, known, strict=True))
        return StepState(sample_ids=sample_ids, scales=scales)

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
        self._check_prepared_ids(state, sample_ids, "reweight()")
        state.reweighted = True  # the blocks run plain ops while it lasts
        state.scales = None  # a block function already in the graph must not scale again
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
            state.weights = torch.mul(c, len(c) * self._world).to(self._dtype)
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
        # Under DDP, world times: DDP averages the ranks' gradients (the class docstring).
        factor = (len(weights) if self.loss_reduction == "sum" else 1) * self._world
        if factor != 1:
            weights = weights * factor
        if weights.dtype != losses.dtype:
            weights = weights.to(losses.dtype)
        return losses @ weights

    def step(self, sample_ids: torch.Tensor | None = None, epoch: int | None = None) -> None:
        """Write each block's natural gradient into ``.grad`` (accumulating like autograd).

        Blocks whose coefficients were known before the backward pass already have it;
        the others' (input, output-gradient) pairs are turned into it here, inverting
        where no stored coefficient fits.
        """
        state, self._state = self._state, None  # dropped whatever happens next
        comm = self.comm
        try:
            if comm is not None:
                self._check_distributed_step(state)
            if state is not None:
                if state.reweighted:
                    self._finish_reweighted(state, sample_ids)
                else:
                    self._finish(state, sample_ids, self.epoch(epoch))
        except BaseException:
            if comm is not None:
                self._end_distributed_step()
            raise
        if comm is not None:
            if self._unsynced:  # DDP's reducer was off: average every gradient here, once
                with phase(FNGD_WEIGHTED_SUM), torch.no_grad():
                    comm.average([p.grad for p in self._params if p.grad is not None])
            self._end_distributed_step()
        self.steps += 1

    def _check_distributed_step(self, state: StepState | None) -> None:
        """Under DDP: ``prepare()`` ran, and a step DDP reduced left nothing to ``step()``."""
        if not self._prepared:
            self._end_distributed_step()
            raise RuntimeError(
                "under DistributedDataParallel FNGD needs prepare(sample_ids) before every "
                "forward pass: it decides there whether DDP reduces the backward pass"
            )
        if not self._unsynced and state is not None and state.stash:
            names = ", ".join(sorted(b.name for b in state.stash))
            self._end_distributed_step()
            raise RuntimeError(
                f"block(s) {names} left their gradient to step() in a step DDP reduced "
                "(a module run twice, a batch of another size than prepared, or reweight() "
                "after the forward pass); under DistributedDataParallel each block must run "
                "once per step, on the prepared batch"
            )

    def _end_distributed_step(self) -> None:
        """DDP's reducer on again, for whatever runs next without FNGD."""
        self._prepared = self._unsynced = False
        assert self.comm is not None
        self.comm.sync(True)

    def _check_prepared_ids(
        self, state: StepState, sample_ids: torch.Tensor | None, caller: str = "step()"
    ) -> None:
        """``sample_ids``, when given, must be the ones ``prepare()`` announced."""
        prepared = state.sample_ids
        if (
            sample_ids is not None
            and prepared is not None
            and sample_ids is not prepared
            and not torch.equal(_host_ids(sample_ids), prepared)
        ):
            why = ""
            if caller == "step()":
                why = ": the weighted sum already used the prepared batch's coefficients"
            raise RuntimeError(f"{caller} got other sample_ids than prepare(){why}")

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
        self._check_prepared_ids(state, sample_ids)
        if state.stash:
            self._write_plain(state.stash)
        self._mode = "weighted_sum"
        self.counts["weighted_sum"] += 1
        if self.check_finite:
            self._check_finite(self.blocks)

    @torch.no_grad()
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
                fresh, table_ids, table = self._invert(invert, pairs, n, sample_ids)
            except NonFiniteGradientError:
                if self.grad_scaler is None:
                    raise
                # an overflow: the scaler skips this step
                self._write_plain({b: [pairs[b]] for b in stashed})
                return True
            inverted_rows = sorted({rows[b.index] for b in invert})
            if self.share == "sample":  # every rank's samples, under DDP
                self._store(table, table_ids, epoch, inverted_rows)
            else:
                self._store(fresh, sample_ids, epoch, inverted_rows)
            coeffs = fresh if coeffs is None else torch.where(
                torch.as_tensor(known, device=fresh.device).unsqueeze(1), coeffs.to(fresh), fresh
            )
        assert coeffs is not None
        with phase(FNGD_WEIGHTED_SUM):
            scales = (coeffs * (n * self._world)).unsqueeze(-1)
            for b in stashed:
                x, grad_out = pairs[b]
                grads = b.weighted_grads(x, grad_out, scales[rows[b.index]].to(grad_out.dtype))
                for p, g in zip(b.params, grads, strict=False):
                    _accumulate(p, g)
        return bool(invert)

    @torch.no_grad()
    def _write_plain(self, stash: dict[Block, list[Pair]]) -> None:
        """Each stashed pair's plain (unit-scale) weight gradient, added to ``.grad``."""
        for b, pairs in stash.items():
            for x, grad_out in pairs:
                ones = grad_out.new_ones(grad_out.shape[0], 1)
                for p, g in zip(b.params, b.weighted_grads(x, grad_out, ones), strict=False):
                    _accumulate(p, g)

    def _invert(
        self,
        active: list[Block],
        pairs: dict[Block, Pair],
        n: int,
        sample_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Gram matrices and the damped solve for ``active``.

        Returns this rank's coefficients (table rows, n) and what the sample table keeps:
        the ids and coefficients (table rows, N) of every rank's samples (of this process's
        alone without DDP). Under DDP they are the global batch's coefficients (the class
        docstring): ``"global"`` solves the global batch's Gram; ``"local"`` solves this
        rank's and divides by the world size, then shares them.
        """
        comm = self.comm
        if comm is not None and comm.world_size > 1 and self.distributed == "global":
            return self._invert_global(comm, active, pairs, n, sample_ids)
        with phase(FNGD_GRAM):
            grams = self._grams(active, pairs, n)
            self.counts["gram"] += 1
        if comm is None or comm.world_size == 1:
            with phase(FNGD_SOLVE):
                c, report = self._solve(grams, [b.name for b in active])
                self.counts["solve"] += 1
            self.last_solve = report
            full = self._table_rows(active, c)
            return full, sample_ids, full
        return self._invert_local(comm, active, grams, n, sample_ids)

    def _invert_local(
        self,
        comm: dist_mod.Comm,
        active: list[Block],
        grams: torch.Tensor,
        n: int,
        sample_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``distributed="local"``: this rank's solve, then every rank's coefficients.

        The coefficients are gathered whatever ``share`` is, so that a rank whose solve
        failed (non-finite gradients) fails on every rank, and the collectives stay matched.
        """
        failure: NonFiniteGradientError | None = None
        report: SolveReport | None = None
        with phase(FNGD_SOLVE):
            try:
                c, report = self._solve(grams, [b.name for b in active])
                self.counts["solve"] += 1
            except NonFiniteGradientError as exc:
                failure = exc
                rows = 1 if self.scope == "network" else len(active)
                c = grams.new_full((rows, n), float("nan"))
            c = c / comm.world_size
        with phase(FNGD_GRAM):  # sharing them: what a later epoch's lookup needs
            sizes = comm.sizes(n, c.device)
            (everyone,) = comm.gather([c.T.contiguous()], sizes)
            ids = None
            if self.share == "sample":
                assert sample_ids is not None
                ids = comm.gather([_host_ids(sample_ids).to(c.device)], sizes)[0].cpu()
        if failure is not None:
            raise failure
        if not bool(torch.isfinite(everyone).all()):
            raise NonFiniteGradientError("non-finite per-sample gradients on another rank")
        self.last_solve = report
        return self._table_rows(active, c), ids, self._table_rows(active, everyone.T)

    def _invert_global(
        self,
        comm: dist_mod.Comm,
        active: list[Block],
        pairs: dict[Block, Pair],
        n: int,
        sample_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``distributed="global"``: the Gram of the global batch from gathered operands.

        Per block, what its Gram path needs: ``(A, D)`` for the pairwise path, the
        per-sample gradients for the explicit one (the path chosen for the global batch),
        all in one ``all_gather``; every rank then forms the same N x N Gram matrices and
        solves them, and keeps its own slice of ``c``.
        """
        device = pairs[active[0]][1].device
        with phase(FNGD_GRAM):
            sizes = comm.sizes(n, device)
            total = sum(sizes)
            operands = self._operands(active, pairs, n)
            paths = [self._gram_path(a, d, total) for a, d in operands]
            send: list[torch.Tensor] = []
            for (a, d), path in zip(operands, paths, strict=True):
                send.extend((a, d) if path == "pairwise" else (gram_mod.per_sample_grads(a, d),))
            got = iter(comm.gather(send, sizes))
            grams = []
            for b, path in zip(active, paths, strict=True):
                self.gram_paths[b.name] = path
                if path == "pairwise":
                    grams.append(gram_mod.gram_pairwise(next(got), next(got)))
                else:
                    g = next(got)
                    grams.append(g @ g.T)
            ids = None
            if self.share == "sample":
                assert sample_ids is not None
                ids = comm.gather([_host_ids(sample_ids).to(device)], sizes)[0].cpu()
            self.counts["gram"] += 1
        with phase(FNGD_SOLVE):
            c, report = self._solve(torch.stack(grams), [b.name for b in active])
            self.counts["solve"] += 1
        self.last_solve = report
        table = self._table_rows(active, c)
        start = sum(sizes[: comm.rank])
        return table[:, start : start + n], ids, table

    def _table_rows(self, active: list[Block], c: torch.Tensor) -> torch.Tensor:
        """``c`` of ``active`` as the tables' rows: (blocks, N) in layer scope, (1, N) else."""
        if self.scope == "network":
            return c
        full = c.new_zeros(len(self.blocks), c.shape[-1])
        full[[b.index for b in active]] = c
        return full

    def _operands(
        self, active: list[Block], pairs: dict[Block, Pair], n: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's Gram operands ``(A, D)`` for the per-sample losses, in the solve's
        dtype and unscaled by the loss scale."""
        dtype = _solve_dtype(pairs[active[0]][1].dtype)
        unscale = None if self.grad_scaler is None else 1.0 / _loss_scale(self.grad_scaler)
        out = []
        for b in active:
            x, grad_out = pairs[b]
            a, d = b.gram_operands(x, grad_out)
            a, d = a.to(dtype), d.to(dtype)
            if self.loss_reduction == "mean":
                d = d * n  # the hook saw delta_i / N
            if unscale is not None:
                d = d * unscale  # K / S^2: the damping stays lambda under a scaled loss
            out.append((a, d))
        return out

    def _grams(self, active: list[Block], pairs: dict[Block, Pair], n: int) -> torch.Tensor:
        """``K_b`` (len(active), N, N) of the per-sample losses, unscaled by the loss scale."""
        grams = []
        for b, (a, d) in zip(active, self._operands(active, pairs, n), strict=True):
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

    def _gram_path(self, a: torch.Tensor, d: torch.Tensor, n: int | None = None) -> str:
        """The Gram path for operands ``a``, ``d`` of a batch of ``n`` samples (default: a's)."""
        if self.gram != "auto":
            return self.gram
        rows, t, p = a.shape
        return gram_mod.choose(rows if n is None else n, t, p, d.shape[-1])

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
        return saved

    def _end_probe(
        self, saved: tuple[StepState | None, list[torch.Tensor | None]]
    ) -> dict[Block, list[Pair]]:
        """Put the step back as it was; the probe's stash."""
        probe = self.step_state()
        self._state, grads = saved
        for p, g in zip(self._params, grads, strict=True):
            p.grad = g
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
                # under DDP the stored coefficients are the global batch's: world times
                # them weighs this rank's probe batch as a fresh local solve does
                stored_dirs[b.name] = _direction(b, pairs[b], stored[row] * self._world)
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
