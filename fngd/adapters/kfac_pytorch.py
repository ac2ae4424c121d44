"""kfac-pytorch's ``KFACPreconditioner`` behind the same surface as ``fngd.KFAC``.

kfac-pytorch (https://github.com/gpauloski/kfac-pytorch) is optional and not on PyPI; it is
imported only when a preconditioner is asked for. By default it is built as for one process:
eigen method, every worker a gradient worker (``grad_worker_fraction=1``), no allreduce
bucketing, no AMP grad scaler. With the same hyperparameters it gives the same preconditioned
gradients as the built-in ``fngd.KFAC`` (``tests/test_kfac_pytorch_adapter.py``).

Distributed. kfac-pytorch runs on ``torch.distributed`` by itself (it communicates whenever a
process group is initialised); its own distributed settings (``grad_worker_fraction``,
``allreduce_bucket_cap_mb``, ``assignment_strategy``, ``colocate_factors``, ...) pass through
``make_preconditioner(..., **options)`` unchanged (the factory's ``kfac_pytorch_options``),
so the adapter never decides for it. Under DDP its G factor is ``world**2`` times the
single-process one (see ``fngd.kfac``'s docstring); the built-in KFAC corrects that.

Phases. kfac-pytorch does its factor, inverse and preconditioning work inside one
``step()`` (and computes each call's batch covariances inside its forward/backward hooks, in
every mode), so it cannot honestly be split into ``kfac/factors`` / ``kfac/inverse`` /
``kfac/precondition``. The whole call is labelled ``kfac-pytorch/step`` instead; its hook work
counts towards ``forward`` and ``backward``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fngd import damping as damping_mod
from fngd import hparams, phases
from fngd.phases import KFAC_PYTORCH_STEP, phase

MISSING_MESSAGE = (
    "kfac-pytorch (J. G. Pauloski's distributed K-FAC preconditioner for PyTorch, module "
    "'kfac.preconditioner') is not installed; it is only needed for the KFAC impl "
    "'kfac-pytorch' (the built-in impl 'builtin' needs nothing). It is not on PyPI (the PyPI "
    "package 'kfac' is an unrelated TensorFlow project). Install it with "
    "`pip install git+https://github.com/gpauloski/kfac-pytorch`, or from a clone with "
    "`pip install /path/to/kfac-pytorch`."
)


#: kfac-pytorch's distributed settings as the adapter sets them unless told otherwise: every
#: worker computes every preconditioned gradient, no bucketing of the factor all-reduce.
ONE_PROCESS: dict[str, Any] = {"allreduce_bucket_cap_mb": 0, "grad_worker_fraction": 1.0}


def _import() -> Any:
    """``kfac.preconditioner.KFACPreconditioner``; ImportError(MISSING_MESSAGE) if absent."""
    try:
        with warnings.catch_warnings():
            # kfac-pytorch warns at import when NVIDIA Apex is absent; that is the normal case.
            warnings.filterwarnings("ignore", message=".*Apex.*")
            from kfac.preconditioner import KFACPreconditioner
    except ImportError as exc:
        raise ImportError(MISSING_MESSAGE) from exc
    return KFACPreconditioner


def available() -> bool:
    """True when kfac-pytorch can be imported."""
    try:
        _import()
    except ImportError:
        return False
    return True


class KFACPytorch:
    """A ``KFACPreconditioner`` behind the suite's ``Preconditioner`` surface, as ``fngd.KFAC``."""

    phases = phases.KFAC_PYTORCH

    def __init__(self, inner: Any) -> None:
        #: The wrapped ``kfac.preconditioner.KFACPreconditioner``.
        self.inner = inner
        #: "inverse" when the last step recomputed the eigendecompositions, else "no_inverse".
        self.mode: str | None = None

    def __repr__(self) -> str:
        return f"KFACPytorch({self.inner!r})"

    @property
    def steps(self) -> int:
        return self.inner.steps

    @property
    def lr(self) -> float:
        """Learning rate used by the kl-clip scale (assignable, as ``fngd.KFAC.lr``)."""
        return self.inner.lr

    @lr.setter
    def lr(self, value: float | Callable[[int], float]) -> None:
        self.inner._lr = value

    def prepare(self, sample_ids: torch.Tensor | None = None) -> None:
        """Nothing to announce: kfac-pytorch does not use sample ids."""

    def loss_weights(self, sample_ids: torch.Tensor | None = None) -> None:
        """None: kfac-pytorch has no per-sample loss weights (the common surface)."""
        return None

    def reweight(self, sample_ids: torch.Tensor | None = None) -> bool:
        """False: kfac-pytorch's step is never a reweighted loss (the common surface)."""
        return False

    def reweighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kfac-pytorch has no per-sample loss weights: reweight() is False")

    def step(self, sample_ids: torch.Tensor | None = None) -> None:
        """kfac-pytorch's ``step()``: factors, inverses when due, preconditioned ``.grad``.

        ``sample_ids`` is accepted for the common surface and ignored.
        """
        inverse = self.inner.steps % self.inner.inv_update_steps == 0
        with phase(KFAC_PYTORCH_STEP):
            self.inner.step()
        self.mode = "inverse" if inverse else "no_inverse"

    def memory_usage(self) -> dict[str, int]:
        """Bytes of ``factors`` (A, G) and ``eigen`` (eigenbases, eigenvalue products).

        Same keys as ``fngd.KFAC``; kfac-pytorch's transient per-batch buffers are left out.
        """
        usage = self.inner.memory_usage()
        return {
            "factors": int(usage.get("a_factors", 0) + usage.get("g_factors", 0)),
            "eigen": int(usage.get("a_inverses", 0) + usage.get("g_inverses", 0)),
        }

    def state_dict(self) -> dict[str, Any]:
        """kfac-pytorch's state dict (steps, hyperparameters, factors)."""
        return self.inner.state_dict(include_factors=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore it; kfac-pytorch recomputes the eigendecompositions from the factors."""
        self.inner.load_state_dict(state, compute_inverses=True)

    def remove(self) -> None:
        """Remove kfac-pytorch's hooks (it keeps no handles, so they are found by owner)."""
        for module in self.inner._layers:
            for hooks in (module._forward_pre_hooks, module._backward_hooks):
                owned = [k for k, h in hooks.items() if getattr(h, "__self__", None) is self.inner]
                for key in owned:
                    del hooks[key]
        self.inner.reset_batch()


def make_preconditioner(
    model: nn.Module,
    *,
    lr: float | Callable[[int], float],
    damping: damping_mod.DampingSpec,
    factor_decay: float | Callable[[int], float],
    kl_clip: float | Callable[[int], float] | None,
    factor_update_steps: int | Callable[[int], int],
    inv_update_steps: int | Callable[[int], int],
    skip_layers: Iterable[str] | str | None = (),
    update_factors_in_hook: bool = False,
    compute_eigenvalue_outer_product: bool = True,
    **options: Any,
) -> KFACPytorch:
    """Build kfac-pytorch's preconditioner with ``fngd.KFAC``'s hyperparameter names.

    ``update_factors_in_hook`` defaults to False, as in ``fngd.KFAC`` (kfac-pytorch's own
    default is True); with one call per module and step both give the same factors.
    ``kl_clip=None`` disables the scaling: kfac-pytorch documents None but its constructor
    rejects it, so it is set after construction. ``options`` go to ``KFACPreconditioner``
    as they are, over the one-process defaults (``ONE_PROCESS``): kfac-pytorch's own
    distributed settings (``grad_worker_fraction``, ``allreduce_bucket_cap_mb``,
    ``assignment_strategy``, ``colocate_factors``, ...). ``damping`` is read as by
    ``fngd.KFAC`` (``fngd.damping``): a text spec becomes its schedule, and a schedule's
    value is checked at every step kfac-pytorch asks for it.
    """
    hparams.check_all(
        {
            "lr": lr,
            "factor_decay": factor_decay,
            "kl_clip": kl_clip,
            "factor_update_steps": factor_update_steps,
            "inv_update_steps": inv_update_steps,
            "update_factors_in_hook": update_factors_in_hook,
            "compute_eigenvalue_outer_product": compute_eigenvalue_outer_product,
        },
        schedule=True,
    )
    skip_layers = hparams.patterns(skip_layers)
    damping = damping_mod.resolve(damping, positive=True)
    if callable(damping):
        damping = functools.partial(damping_mod.at, damping, positive=True)
    cls = _import()
    settings: dict[str, Any] = {
        "factor_update_steps": factor_update_steps,
        "inv_update_steps": inv_update_steps,
        "damping": damping,
        "factor_decay": factor_decay,
        "kl_clip": 0.001 if kl_clip is None else kl_clip,
        "lr": lr,
        "accumulation_steps": 1,
        "compute_method": "eigen",
        "compute_eigenvalue_outer_product": compute_eigenvalue_outer_product,
        "grad_scaler": None,
        "skip_layers": skip_layers,
        "update_factors_in_hook": update_factors_in_hook,
        **ONE_PROCESS,
        **options,
    }
    inner = cls(model, **settings)
    if kl_clip is None:
        inner._kl_clip = None
    return KFACPytorch(inner)
