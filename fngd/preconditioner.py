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

Under DistributedDataParallel (``FNGD(ddp_model)``) the blocks are the inner module's
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

The pieces: ``fngd.blocks`` (per-module forward and backward), ``fngd.inversion`` (Gram
matrices, the solve and the store, in one process or across ranks), ``fngd.coefficients``
(the tables), ``fngd.step_state`` (what one step carries), ``fngd.block_grads`` (gradients
written by ``step()``), ``fngd.ddp_step`` (who reduces a step under DDP),
``fngd.sample_ids`` (the ids' one form) and ``fngd.staleness`` (the probe); ``FNGD`` is the
user's surface and the step's state machine.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from operator import attrgetter
from typing import Any, Literal

import torch
from torch import nn

from fngd import coverage as coverage_mod
from fngd import damping as damping_mod
from fngd import distributed as dist_mod
from fngd import hparams
from fngd import staleness as staleness_mod
from fngd.block_grads import check_finite, write_plain, write_weighted
from fngd.blocks import Block
from fngd.blocks import decide as decide_blocks
from fngd.blocks import native as native_blocks
from fngd.coefficients import IterationTable, SampleTable
from fngd.ddp_step import DDPStep
from fngd.inversion import NETWORK, Inversion
from fngd.phases import FNGD as FNGD_PHASES
from fngd.phases import FNGD_WEIGHTED_SUM, phase
from fngd.phases import NGD as NGD_PHASES
from fngd.sample_ids import check_batch, checked
from fngd.solve import NonFiniteGradientError, SolveReport
from fngd.staleness import Staleness
from fngd.step_state import StepState, block_uses

Share = Literal["none", "sample", "iteration"]
Scope = Literal["layer", "network"]
#: Whether the weighted-sum phase checks for non-finite gradients unless told otherwise (the
#: optimiser factory's default too); why it is off: ``FNGD``'s ``check_finite``.
CHECK_FINITE = False

__all__ = ["CHECK_FINITE", "FNGD", "NETWORK", "NonFiniteGradientError"]

_index = attrgetter("index")


class FNGD:
    """Fast natural gradient preconditioner for nn.Linear, nn.Conv1d and nn.Conv2d blocks.

    Args:
        model: its Linear, Conv1d and Conv2d modules (minus ``skip_layers``, modules inside
            ``nn.MultiheadAttention`` and modules sharing a weight: ``fngd.blocks.decide``)
            become blocks; ``coverage()`` lists every trainable parameter and why it is
            not preconditioned where it is not. Other parameters (norms, embeddings,
            skipped layers) get the plain gradient of the
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
        share: ``"sample"`` (coefficients per dataset sample id; ``sample_ids`` required,
            ``fngd.sample_ids``), ``"iteration"`` (per iteration index within the epoch;
            ``steps_per_epoch`` required) or ``"none"`` (exact NGD: inversion every step).
        refresh_epochs: recompute the coefficients every k epochs; None inverts only when
            a coefficient is first needed (the first epoch), as the paper does.
        steps_per_epoch: steps in an epoch, to count epochs and iterations.
        loss_reduction: how the batch loss was reduced over samples, ``"mean"`` or ``"sum"``.
            A loss averaged over all tokens of a batch counts as ``"mean"``: each sample's
            loss is then its tokens' sum divided by the mean token count, which divides the
            Fisher by that count squared (so the damping weighs relatively more).
        gram: ``"auto"`` picks pairwise or explicit per layer by a cost estimate.
        skip_layers: regular expressions on module names (search) or class names (full
            match) of modules to leave out; one string is one pattern.
        check_finite: in the weighted-sum phase, raise ``NonFiniteGradientError`` naming
            the blocks whose gradient is not finite. Off by default (``CHECK_FINITE``): it
            is a host synchronisation per step that SGD does not pay (on a GPU it stalls the
            queue); a NaN still shows in the loss, and the inversion phase always checks.
        distributed: the inversion phase under ``DistributedDataParallel`` (pass the DDP
            model; the module docstring): ``"global"`` solves the global batch's Gram (a
            step equals one process's on the ranks' batches concatenated), ``"local"`` each
            rank's own (block-diagonal across ranks); ``fngd.inversion``.
        process_group: the ranks to communicate with (default: the DDP model's group).
        native: the weighted-sum phase of layer scope through compiled blocks
            (``fngd.blocks.native``: ``"auto"`` where they build, ``"on"`` or ``"off"``):
            the same gradients without the Python block function's per-layer cost, inside
            autograd's backward (records count them as ``backward``).

    ``mode`` says what the last step did: ``"inversion"`` (some block solved for its
    coefficients) or ``"weighted_sum"`` (every block reused stored ones); None before the
    first step. Under a ``torch.func`` transform the blocks run their module's plain op and
    record nothing, so per-sample gradients and the like can be taken with FNGD attached.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        damping: damping_mod.DampingSpec = 1e-3,
        share: Share = "sample",
        scope: Scope = "layer",
        damping_mode: str = "constant",
        normalize: bool = False,
        grad_scaler: Any = None,
        refresh_epochs: int | None = None,
        steps_per_epoch: int | None = None,
        loss_reduction: str = "mean",
        gram: str = "auto",
        skip_layers: Iterable[str] | str = (),
        check_finite: bool = CHECK_FINITE,
        distributed: str = "global",
        process_group: Any = None,
        native: str = "auto",
    ) -> None:
        # Every argument against its rule (``fngd.hparams``); skip_layers as a list.
        skip_layers = hparams.check_all(
            {
                "share": share,
                "scope": scope,
                "damping_mode": damping_mode,
                "normalize": normalize,
                "grad_scaler": grad_scaler,
                "refresh_epochs": refresh_epochs,
                "steps_per_epoch": steps_per_epoch,
                "loss_reduction": loss_reduction,
                "gram": gram,
                "skip_layers": skip_layers,
                "check_finite": check_finite,
                "distributed": distributed,
                "native": native,
            }
        )["skip_layers"]
        self.damping = damping_mod.resolve(damping)
        if share == "iteration" and not steps_per_epoch:
            raise ValueError('share="iteration" needs steps_per_epoch')
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
        self._ddp = DDPStep()  # under DDP: who reduces the coming step

        decisions = decide_blocks(model, self.skip_layers)
        found = [(d.name, d.module, d.block) for d in decisions if d.block is not None]
        # Only layer scope's weighted sum runs through blocks that know their scales at
        # their forward (network scope's is a reweighted loss; exact NGD has none).
        native_blocks.check(native)
        compiled = bool(found) and scope == "layer" and share != "none"
        kernels = native_blocks.kernels(native) if compiled else None
        #: Whether the compiled weighted-sum blocks run ("on") or the Python ones ("off").
        self.native = "off" if kernels is None else "on"
        self.blocks: list[Block] = [
            cls(name, module, self, i, kernels) for i, (name, module, cls) in enumerate(found)
        ]

        self._coverage = coverage_mod.of(
            model,
            {b.name: b.name for b in self.blocks},
            {d.name: d.reason for d in decisions if d.reason is not None},
        )
        coverage_mod.warn_plain(self._coverage, "FNGD")
        self._params = list(model.parameters())  # whose .grad a staleness probe keeps
        self.counts = {"inversion": 0, "weighted_sum": 0, "gram": 0, "solve": 0}
        #: Gram matrices and the solve (``fngd.inversion``), with this preconditioner's settings.
        self.inversion = Inversion(
            num_blocks=len(self.blocks),
            scope=scope,
            damping_mode=damping_mode,
            normalize=normalize,
            gram=gram,
            loss_reduction=loss_reduction,
            grad_scaler=grad_scaler,
            refresh_epochs=refresh_epochs,
            distributed=distributed,
            counts=self.counts,
        )
        #: The Gram path each block took last (``fngd.gram``).
        self.gram_paths = self.inversion.gram_paths
        #: The stored coefficients, in the table ``share`` keeps them in.
        self.store = self.inversion.store
        self.steps = 0
        self._mode: str | None = None
        self._state: StepState | None = None  # this step's, between prepare() and step()

    # -- what the step did, and where it is ----------------------------------------------
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

    @property
    def _dtype(self) -> torch.dtype:
        """The parameters' dtype now: read at every step, so a cast after construction
        (``model.double()``) is followed in both phases."""
        return self.blocks[0].dtype if self.blocks else torch.float32

    def coverage(self) -> coverage_mod.Coverage:
        """Every trainable parameter of the model: the block preconditioning it, or why it
        keeps the plain gradient (``fngd.coverage``)."""
        return self._coverage

    @property
    def sample_table(self) -> SampleTable:
        return self.store.sample_table

    @property
    def iteration_table(self) -> IterationTable:
        return self.store.iteration_table

    @property
    def last_solve(self) -> SolveReport | None:
        """What the last training step's solve did per block."""
        return self.inversion.last_solve

    def epoch(self, epoch: int | None = None) -> int:
        if epoch is not None:
            return epoch
        if self.steps_per_epoch:
            return self.steps // self.steps_per_epoch
        if self.refresh_epochs is not None:
            raise ValueError("refresh_epochs needs steps_per_epoch or an explicit epoch")
        return 0

    def _iteration(self) -> int | None:
        """This step's index within the epoch, where coefficients are kept by it."""
        if self.share != "iteration":
            return None
        assert self.steps_per_epoch
        return self.steps % self.steps_per_epoch

    # -- the step ----------------------------------------------------------------------
    def step_state(self) -> StepState:
        """This step's state; the first backward creates it when ``prepare()`` did not."""
        state = self._state
        if state is None:
            state = self._state = StepState()
        return state

    def discard(self) -> None:
        """Drop what a backward pass left for ``step()`` (e.g. a backward not followed by one)."""
        self._state = None
        if self.comm is not None:
            self._ddp.end(self.comm)

    def prepare(self, sample_ids: Any = None, epoch: int | None = None) -> None:
        """Announce the next batch; with known coefficients the weighted sum runs in backward.

        Anything a previous backward left without a ``step()`` is dropped. Under DDP it also
        decides whether DDP's reducer runs in the coming backward pass (the module docstring).
        """
        ids = None if sample_ids is None else checked(sample_ids)
        if self._state is not None:
            self.discard()
        if not (self.share == "sample" and ids is None):
            with phase(FNGD_WEIGHTED_SUM):
                found = self.store.columns(self.share, ids, self._iteration(), self.epoch(epoch))
                if found is not None:
                    self._state = StepState.known(
                        ids, *found, network=self.scope == "network", dtype=self._dtype,
                        world=self._world,
                    )
        if self.comm is not None:
            state = self._state
            self._ddp.prepare(self.comm, state is not None and state.known_before_backward)

    def reweight(self, sample_ids: Any = None) -> bool:
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
        ids = _checked_ids(sample_ids, state)
        if state is None or state.coefficients is None:
            return False
        _check_prepared_ids(state, ids, "reweight()")
        state.reweighted = True  # the blocks run plain ops while it lasts
        state.scales = None  # a block function already in the graph must not scale again
        return True

    def loss_weights(self, sample_ids: Any = None) -> torch.Tensor | None:
        """``reweight()``, returning the per-sample loss weights ``w = N c`` (N,), or None.

        ``w`` is detached, in the parameters' dtype and on their device. Reduce ``w * l`` as
        the loss is reduced: ``(w * l).mean()`` for ``loss_reduction="mean"``,
        ``(w * l).sum()`` for ``"sum"`` (``reweighted_loss(l)`` computes the same in one op).
        """
        if not self.reweight(sample_ids):
            return None
        assert self._state is not None
        return self._state.loss_weights(self._dtype, self._world)

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The reweighted batch loss of per-sample ``losses`` (N,), after ``reweight()``.

        ``(w * losses).mean()`` for ``loss_reduction="mean"`` (``.sum()`` for ``"sum"``)
        computed as one dot product, ``sum_i c_i l_i`` (``sum_i N c_i l_i``): one autograd
        node instead of two, which is most of what a reweighted step adds to an SGD step.
        """
        state = self._state
        if state is None or not state.reweighted or state.coefficients is None:
            raise RuntimeError("reweighted_loss() needs reweight() to have returned True")
        # Under DDP, world times: DDP averages the ranks' gradients (the module docstring).
        return state.reweighted_loss(
            losses, summed=self.loss_reduction == "sum", world=self._world
        )

    def step(self, sample_ids: Any = None, epoch: int | None = None) -> None:
        """Write each block's natural gradient into ``.grad`` (accumulating like autograd).

        Blocks whose coefficients were known before the backward pass already have it;
        the others' (input, output-gradient) pairs are turned into it here, inverting
        where no stored coefficient fits.
        """
        state, self._state = self._state, None  # dropped whatever happens next
        comm = self.comm
        try:
            if comm is not None:
                self._ddp.check(comm, state)
            ids = _checked_ids(sample_ids, state)
            if state is not None:
                if state.reweighted:
                    self._finish_reweighted(state, ids)
                else:
                    self._finish(state, ids, self.epoch(epoch))
        except BaseException:
            if comm is not None:
                self._ddp.end(comm)
            raise
        if comm is not None:
            self._ddp.finish(comm, self._params)
        self.steps += 1

    def _finish(self, state: StepState, ids: torch.Tensor | None, epoch: int) -> None:
        """The gradients of the blocks the backward pass left to ``step()``; the mode."""
        summed = state.summed
        if summed:
            _check_prepared_ids(state, ids)
        stashed = sorted(state.stash, key=_index) if state.stash else []
        inverted = self._step_from_stash(stashed, state, ids, epoch) if stashed else False
        if summed or stashed:
            self._mode = "inversion" if inverted else "weighted_sum"
            self.counts[self._mode] += 1
            if self.check_finite and not inverted:
                check_finite(sorted({*summed, *stashed}, key=_index))

    def _finish_reweighted(self, state: StepState, ids: torch.Tensor | None) -> None:
        """A reweighted step: the loss carried ``N c``, so autograd's gradients are FNGD's.

        A block whose forward ran before ``reweight()`` stashed its pair: its plain
        weight gradient (unit scale) is the reweighted loss's.
        """
        _check_prepared_ids(state, ids)
        if state.stash:
            write_plain(state.stash)
        self._mode = "weighted_sum"
        self.counts["weighted_sum"] += 1
        if self.check_finite:
            check_finite(self.blocks)

    @torch.no_grad()
    def _step_from_stash(
        self, stashed: list[Block], state: StepState, ids: torch.Tensor | None, epoch: int
    ) -> bool:
        """Weighted sums for the stashed blocks; returns whether any of them inverted."""
        pairs = block_uses(state, stashed)
        n = pairs[stashed[0]][0][0].shape[0]
        if ids is not None:
            check_batch(ids, n)
        try:
            coeffs, inverted = self.inversion.coefficients(
                stashed, pairs, n, share=self.share, ids=ids, iteration=self._iteration(),
                epoch=epoch, damping=damping_mod.at(self.damping, self.steps), comm=self.comm,
            )
        except NonFiniteGradientError:
            if self.grad_scaler is None:
                raise
            write_plain({b: pairs[b] for b in stashed})  # an overflow: the scaler skips it
            return True
        with phase(FNGD_WEIGHTED_SUM):
            scales = (coeffs * (n * self._world)).unsqueeze(-1)
            write_weighted(stashed, pairs, scales, self.inversion.rows)
        return inverted

    # -- staleness ---------------------------------------------------------------------
    def staleness(self, sample_ids: Any = None, *, iteration: int | None = None) -> Staleness:
        """A probe: how far the stored coefficients' direction is from a fresh solve.

        ``with pre.staleness(ids) as probe: loss_fn(model(x), y).backward()``, then
        ``probe.result``: key -> ``{"cosine", "norm_ratio", "known"}`` (``fngd.staleness``).
        The stored coefficients are looked up by ``sample_ids`` (``share="sample"``) or for
        ``iteration`` (``"iteration"``, an index within the epoch) and compared with a fresh
        solve on the same batch and weights, with the damping a solve would use now. The
        probe's backward reaches no ``.grad``, table, step count, mode or count.
        """
        ids = None if sample_ids is None else checked(sample_ids)
        if self.share == "sample" and ids is None:
            raise ValueError('share="sample" needs the probe batch\'s sample_ids')
        if self.share == "iteration" and iteration is None:
            raise ValueError('share="iteration" needs the iteration whose coefficients to probe')
        measure = functools.partial(
            staleness_mod.measure,
            inversion=self.inversion,
            share=self.share,
            sample_ids=ids,
            iteration=iteration,
            epoch=self.epoch(),
            damping=damping_mod.at(self.damping, self.steps),
            world=self._world,
        )
        return Staleness(self._swap_state, self._params, measure)

    def _swap_state(self, state: StepState | None) -> StepState | None:
        """This step's state replaced by ``state``; the one it had (what a probe swaps)."""
        old, self._state = self._state, state
        return old

    # -- bookkeeping -----------------------------------------------------------------
    def reset_coefficients(self) -> None:
        """Forget every stored coefficient: the next steps run the inversion phase again."""
        self.store.reset()

    def memory_usage(self) -> dict[str, int]:
        """Bytes of the coefficient tables: their values and their host bookkeeping (the
        epochs stored, a sparse table's id index), ``fngd.coefficients``."""
        return {"coefficients": self.store.nbytes()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "share": self.share,
            "scope": self.scope,
            "blocks": [b.name for b in self.blocks],
            **self.store.state_dict(),
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
        self.store.load_state_dict(state, device)

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
            f"scope={self.scope!r}, refresh_epochs={self.refresh_epochs}, "
            f"loss_reduction={self.loss_reduction!r})"
        )


def _checked_ids(sample_ids: Any, state: StepState | None) -> torch.Tensor | None:
    """``sample_ids`` as ``fngd.sample_ids.checked`` gives them; the very ids ``prepare()``
    checked (the loaders' tensor, handed on) as they are."""
    if sample_ids is None or (state is not None and sample_ids is state.sample_ids):
        return sample_ids
    return checked(sample_ids)


def _check_prepared_ids(
    state: StepState, ids: torch.Tensor | None, caller: str = "step()"
) -> None:
    """``ids``, when given, must be the ones ``prepare()`` announced."""
    prepared = state.sample_ids
    if ids is not None and prepared is not None and ids is not prepared and not torch.equal(
        ids, prepared
    ):
        why = ""
        if caller == "step()":
            why = ": the weighted sum already used the prepared batch's coefficients"
        raise RuntimeError(f"{caller} got other sample_ids than prepare(){why}")
