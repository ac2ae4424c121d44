"""``KFAC``: the built-in KFAC gradient preconditioner, with kfac-pytorch's conventions.

Used like kfac-pytorch's ``KFACPreconditioner``::

    pre = KFAC(model, lr=0.1, damping=0.003)
    loss.backward(); pre.step(); optimizer.step()

It has FNGD's surface too (``prepare(sample_ids)``, ``step(sample_ids)``, ``mode``, ``phases``);
KFAC needs no sample ids and ignores them. Under a ``torch.func`` transform the hooks record
nothing, so per-sample gradients and the like can be taken with KFAC attached.

Constructor names, defaults of the shared conventions and step counting are kfac-pytorch's
(``kfac/preconditioner.py``, ``kfac/base_preconditioner.py``), so for the same
hyperparameters both produce the same preconditioned gradients (checked in
``tests/test_kfac_pytorch_adapter.py``). Per step (``steps`` counts ``step()`` calls from 0):

- factors are gathered in the forward/backward pass and folded into the running averages
  when ``steps % factor_update_steps == 0``;
- A and G are eigendecomposed when ``steps % inv_update_steps == 0`` (so on the first step);
- every block's gradient is preconditioned, then all are scaled by
  ``min(1, sqrt(kl_clip / |lr² Σ preconditioned·grad|))`` (skipped when ``kl_clip`` is None),
  and written into ``.grad``.

Where the factor work runs. By default (``update_factors_in_hook=False``, kfac-pytorch's
non-default mode) the hooks only keep references to each layer input and output gradient,
and only on factor-update steps; ``step()`` forms the covariances inside the top-level
``kfac/factors`` phase. That keeps KFAC's own cost out of the ``forward``/``backward`` timings
and gives each KFAC phase one uninterrupted interval; the price is holding the layer output
gradients from the backward pass until ``step()`` (the inputs are alive for autograd anyway).
With ``update_factors_in_hook=True`` (kfac-pytorch's default) each call's factors are formed
and folded into the running averages in the hooks, as nested ``kfac/factors`` phases inside
``forward`` and ``backward``. With one call per module and step both give the same factors;
a module called several times per step gets one averaged update in the first mode and one
update per call in the second, exactly like kfac-pytorch.

Under ``torch.distributed`` (kfac-pytorch's rule: whenever a process group of more than one
process is initialised, or the given ``process_group``): the gradients are DDP's average, and
on every factor-update step the running factors of every block are averaged over the ranks in
one all-reduce (kfac-pytorch's ``allreduce`` of the factors); every rank then decomposes every
factor itself (kfac-pytorch can spread that work, ``grad_worker_fraction``). One correction
makes the preconditioned gradient equal the single-process one on the ranks' batches
concatenated: a rank's output gradients carry ``1 / n`` of its local mean loss, not the global
``1 / (world n)``, so G is divided by ``world**2`` (kfac-pytorch leaves it ``world**2`` times
the single-process G, which moves the balance between G and the damping with the world size).
A ``DistributedDataParallel`` model is unwrapped: layer names are the inner module's.

Deliberate departures from kfac-pytorch, none of which changes a supported case: factors are
computed in at least float32 (kfac-pytorch keeps the activations' dtype); with
``inv_dtype=torch.float64`` the eigendecomposition runs in float64 (kfac-pytorch always runs
it in float32); a registered module that never ran, or has no gradient, is left alone instead
of raising; the kl-clip scale stays on the device (no host sync); grouped convolutions are not
registered; ``.grad`` is updated in place; ``state_dict`` also holds the eigendecompositions so
that a restored run continues bit-for-bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from fngd import coverage as coverage_mod
from fngd import damping as damping_mod
from fngd import distributed as dist_mod
from fngd import hparams, phases
from fngd.kfac.block import KFACBlock
from fngd.kfac.layers import find_layers, plain_reasons
from fngd.phases import KFAC_FACTORS, KFAC_INVERSE, KFAC_PRECONDITION, phase
from fngd.transforms import transforms_active

FloatOrSchedule = float | Callable[[int], float]
IntOrSchedule = int | Callable[[int], int]


class KFAC:
    """KFAC preconditioner (eigen method) for ``nn.Linear`` and ``nn.Conv2d`` layers.

    Hyperparameters may be numbers or, as in kfac-pytorch, callables of the step count.
    ``damping`` is read as FNGD reads it (``fngd.damping``): a float, a schedule of the step
    or a text spec such as ``"geometric:1.0:0.01:200"``; it must be finite and > 0 (the
    eigenvalue division needs it), also a schedule's value at each step. ``lr`` is only
    used by the kl-clip scale and must follow the optimiser's learning rate (assign
    ``pre.lr`` or pass a schedule).
    """

    phases = phases.KFAC

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: FloatOrSchedule = 0.1,
        damping: damping_mod.DampingSpec = 0.003,
        factor_decay: FloatOrSchedule = 0.95,
        kl_clip: FloatOrSchedule | None = 0.001,
        factor_update_steps: IntOrSchedule = 1,
        inv_update_steps: IntOrSchedule = 10,
        skip_layers: Iterable[str] | str | None = (),
        update_factors_in_hook: bool = False,
        compute_eigenvalue_outer_product: bool = True,
        factor_dtype: torch.dtype | None = None,
        inv_dtype: torch.dtype = torch.float32,
        process_group: Any = None,
    ) -> None:
        schedules = {
            "lr": lr,
            "factor_decay": factor_decay,
            "kl_clip": kl_clip,
            "factor_update_steps": factor_update_steps,
            "inv_update_steps": inv_update_steps,
        }
        hparams.check_all(schedules, schedule=True)
        flags = {
            "update_factors_in_hook": update_factors_in_hook,
            "compute_eigenvalue_outer_product": compute_eigenvalue_outer_product,
            "factor_dtype": factor_dtype,
            "inv_dtype": inv_dtype,
        }
        hparams.check_all(flags)
        if (
            isinstance(inv_update_steps, int)
            and isinstance(factor_update_steps, int)
            and inv_update_steps % factor_update_steps != 0
        ):
            warnings.warn(
                "inv_update_steps should be a multiple of factor_update_steps", stacklevel=2
            )

        self._lr = lr
        self._damping = damping_mod.resolve(damping, positive=True)
        self._factor_decay = factor_decay
        self._kl_clip = kl_clip
        self._factor_update_steps = factor_update_steps
        self._inv_update_steps = inv_update_steps
        self.skip_layers = hparams.patterns(skip_layers)
        self.update_factors_in_hook = update_factors_in_hook
        self.compute_eigenvalue_outer_product = compute_eigenvalue_outer_product
        self.factor_dtype = factor_dtype
        self.inv_dtype = inv_dtype

        model, ddp = dist_mod.unwrap(model)
        if process_group is None:
            process_group = getattr(ddp, "process_group", None) or dist_mod.default_group()
        #: The factors' all-reduce across ranks (None in one process).
        self.comm = None if process_group is None else dist_mod.Comm(process_group)
        if self.comm is not None and self.comm.world_size == 1:
            self.comm = None
        world = 1 if self.comm is None else self.comm.world_size

        self._steps = 0
        #: What the last ``step()`` did: "inverse" (eigendecompositions updated) or
        #: "no_inverse"; None before the first step.
        self.mode: str | None = None

        self.blocks: dict[str, KFACBlock] = {}
        self._by_module: dict[nn.Module, KFACBlock] = {}
        # Step-mode buffers: per block, this step's layer inputs and output gradients.
        self._inputs: dict[KFACBlock, list[torch.Tensor]] = {}
        self._grads: dict[KFACBlock, list[torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []
        for helper in find_layers(model, self.skip_layers):
            block = KFACBlock(
                helper,
                factor_dtype=factor_dtype,
                inv_dtype=inv_dtype,
                prediv_eigenvalues=compute_eigenvalue_outer_product,
                g_scale=1.0 / world**2,
            )
            self.blocks[helper.name] = block
            self._by_module[helper.module] = block
            self._handles.append(
                helper.module.register_forward_hook(self._forward_hook, with_kwargs=True)
            )
        self._coverage = coverage_mod.of(
            model,
            {name: name for name in self.blocks},
            plain_reasons(model, self.skip_layers, self.blocks),
        )
        coverage_mod.warn_plain(self._coverage, "KFAC")

    def coverage(self) -> coverage_mod.Coverage:
        """Every trainable parameter of the model: the layer preconditioning it, or why it
        keeps the plain gradient (``fngd.coverage``)."""
        return self._coverage

    def __repr__(self) -> str:
        return (
            f"KFAC(layers={len(self.blocks)}, lr={self._lr}, "
            f"damping={damping_mod.describe(self._damping)}, "
            f"factor_decay={self._factor_decay}, kl_clip={self._kl_clip}, "
            f"factor_update_steps={self._factor_update_steps}, "
            f"inv_update_steps={self._inv_update_steps}, steps={self._steps})"
        )

    # -- hyperparameters (kfac-pytorch: a value, or a callable of the step count) --------
    def _at(self, value: Any) -> Any:
        return value(self._steps) if callable(value) else value

    @property
    def steps(self) -> int:
        """Number of completed ``step()`` calls."""
        return self._steps

    @property
    def lr(self) -> float:
        return self._at(self._lr)

    @lr.setter
    def lr(self, value: FloatOrSchedule) -> None:
        self._lr = hparams.check("lr", value, schedule=True)

    @property
    def damping(self) -> float:
        return damping_mod.at(self._damping, self._steps, positive=True)

    @damping.setter
    def damping(self, value: damping_mod.DampingSpec) -> None:
        self._damping = damping_mod.resolve(value, positive=True)

    @property
    def factor_decay(self) -> float:
        return self._at(self._factor_decay)

    @property
    def kl_clip(self) -> float | None:
        return self._at(self._kl_clip)

    @property
    def factor_update_steps(self) -> int:
        return self._at(self._factor_update_steps)

    @property
    def inv_update_steps(self) -> int:
        return self._at(self._inv_update_steps)

    # -- hooks -------------------------------------------------------------------------
    def _collecting(self, module: nn.Module) -> bool:
        # As kfac-pytorch: only in training mode and on factor-update steps. Unlike it,
        # forwards without autograd (no backward will follow) are ignored, and so are forwards
        # under a torch.func transform (their tensors must not reach step()).
        return (
            module.training
            and torch.is_grad_enabled()
            and self._steps % self.factor_update_steps == 0
            and not transforms_active()
        )

    def _forward_hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not self._collecting(module):
            return
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        x = args[0] if args else kwargs["input"]
        block = self._by_module[module]
        if self.update_factors_in_hook:
            with phase(KFAC_FACTORS), torch.no_grad():
                block.add_input(x.detach())
                block.update_a_factor(self.factor_decay)
        else:
            self._inputs.setdefault(block, []).append(x.detach())
        # A hook on the output tensor (not a module backward hook) gets the gradient w.r.t.
        # the module's output even when the next op works in place, and adds no wrapping.
        output.register_hook(lambda g: self._grad_hook(block, g))

    def _grad_hook(self, block: KFACBlock, grad: torch.Tensor) -> None:
        if self.update_factors_in_hook:
            with phase(KFAC_FACTORS), torch.no_grad():
                block.add_grad_output(grad)
                block.update_g_factor(self.factor_decay)
        else:
            # Keep the very tensor (no detach): autograd then never accumulates into it.
            self._grads.setdefault(block, []).append(grad)

    # -- the step ----------------------------------------------------------------------
    def prepare(self, sample_ids: torch.Tensor | None = None) -> None:
        """Nothing to announce: KFAC's step does not depend on the batch's sample ids."""

    def loss_weights(self, sample_ids: torch.Tensor | None = None) -> None:
        """None: KFAC has no per-sample loss weights (the common surface)."""
        return None

    def reweight(self, sample_ids: torch.Tensor | None = None) -> bool:
        """False: KFAC's step is never a reweighted loss (the common surface)."""
        return False

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("KFAC has no per-sample loss weights: reweight() is False")

    @torch.no_grad()
    def step(self, sample_ids: torch.Tensor | None = None) -> None:
        """Update factors / eigendecompositions when due, then precondition every ``.grad``.

        Call after ``loss.backward()`` and before ``optimizer.step()``; ``sample_ids`` is
        accepted for the common surface and ignored.
        """
        factor_step = self._steps % self.factor_update_steps == 0
        if factor_step and (not self.update_factors_in_hook or self.comm is not None):
            with phase(KFAC_FACTORS):
                if not self.update_factors_in_hook:
                    self._update_factors()
                if self.comm is not None:
                    self._average_factors()
        self.reset_batch()

        inverse = self._steps % self.inv_update_steps == 0
        if inverse:
            with phase(KFAC_INVERSE):
                damping = self.damping
                for block in self.blocks.values():
                    if block.has_factors:
                        block.compute_eigen(damping)

        with phase(KFAC_PRECONDITION):
            self._precondition()

        self.mode = "inverse" if inverse else "no_inverse"
        self._steps += 1

    def _update_factors(self) -> None:
        decay = self.factor_decay
        for block in self.blocks.values():
            # Popped so each layer's saved tensors are released as soon as they are used.
            for x in self._inputs.pop(block, ()):
                block.add_input(x)
            for g in self._grads.pop(block, ()):
                block.add_grad_output(g)
            block.update_a_factor(decay)
            block.update_g_factor(decay)

    def _average_factors(self) -> None:
        """Every block's running A and G averaged over the ranks, in one all-reduce."""
        assert self.comm is not None
        factors = [
            f
            for block in self.blocks.values()
            for f in (block.a_factor, block.g_factor)
            if f is not None
        ]
        self.comm.average(factors)

    def _precondition(self) -> None:
        damping = self.damping
        work: list[tuple[KFACBlock, torch.Tensor, torch.Tensor]] = []
        for block in self.blocks.values():
            grad = block.helper.grad_matrix()
            if grad is None or not block.has_eigen:
                continue
            work.append((block, grad, block.precondition(grad, damping)))
        if not work:
            return

        kl_clip = self.kl_clip
        if kl_clip is None:
            for block, _, new in work:
                block.helper.set_grad(new)
            return
        # kfac-pytorch: scale = min(1, sqrt(kl_clip / |lr² Σ new·grad|)), 1 when the sum is 0.
        # Kept on the device (no .item()), summed in float64 like its Python-float sum.
        device = work[0][1].device
        terms = []
        for _, grad, new in work:
            acc = torch.promote_types(grad.dtype, torch.float32)
            terms.append((new.to(acc) * grad.to(acc)).sum().to(device, torch.float64))
        vg = torch.stack(terms).sum() * (self.lr**2)
        ratio = torch.sqrt(kl_clip / vg.abs().clamp_min(torch.finfo(torch.float64).tiny))
        scale = torch.where(vg == 0, torch.ones_like(vg), ratio.clamp(max=1.0))
        for block, _, new in work:
            block.helper.set_grad(new * scale.to(new.device))

    # -- housekeeping ------------------------------------------------------------------
    def reset_batch(self) -> None:
        """Drop inputs and gradients gathered since the last step."""
        self._inputs.clear()
        self._grads.clear()
        for block in self.blocks.values():
            block.reset_batch()

    def remove(self) -> None:
        """Remove the hooks from the model (the preconditioner can no longer gather)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.reset_batch()

    def memory_usage(self) -> dict[str, int]:
        """Bytes held: ``factors`` (running A and G) and ``eigen`` (eigenbases/values)."""
        usage = {"factors": 0, "eigen": 0}
        for block in self.blocks.values():
            for key, value in block.memory_usage().items():
                usage[key] += value
        return usage

    def state_dict(self) -> dict[str, Any]:
        """kfac-pytorch's layout (``steps``, numeric hyperparameters, ``layers``) + eigen."""
        state: dict[str, Any] = {"steps": self._steps}
        for key in (
            "factor_update_steps",
            "inv_update_steps",
            "damping",
            "factor_decay",
            "kl_clip",
            "lr",
        ):
            value = getattr(self, "_" + key)
            if not callable(value):
                state[key] = value
        state["layers"] = {name: block.state_dict() for name, block in self.blocks.items()}
        return state

    def load_state_dict(self, state: dict[str, Any], compute_inverses: bool = True) -> None:
        """Restore a ``state_dict``; eigendecompositions missing from it are recomputed."""
        self._steps = int(state["steps"])
        for key in (
            "factor_update_steps",
            "inv_update_steps",
            "damping",
            "factor_decay",
            "kl_clip",
            "lr",
        ):
            if key in state:
                setattr(self, "_" + key, state[key])
        self.damping = self._damping  # through fngd.damping, as the constructor's
        layers = state.get("layers")
        if layers is None:
            return
        if set(layers) != set(self.blocks):
            raise ValueError(
                f"state has layers {sorted(layers)} but this model has {sorted(self.blocks)}"
            )
        damping = self.damping
        for name, block in self.blocks.items():
            has_eigen = block.load_state_dict(layers[name])
            if not has_eigen and compute_inverses and block.has_factors:
                block.compute_eigen(damping)
        self.reset_batch()
