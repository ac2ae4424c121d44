"""FNGD, the built-in KFAC and the kfac-pytorch adapter share one surface.

``prepare(sample_ids=...)``, ``step(sample_ids=...)``, ``mode`` and ``phases`` (names from
``fngd.phases`` only), so ``BenchOptimizer`` drives each the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from fngd import FNGD, KFAC, phases
from fngd.adapters import kfac_pytorch
from fngd.optimizers import DEFAULTS, build
from fngd.optimizers.base import Preconditioner
from fngd.preconditioner import CHECK_FINITE


def _kfac_pytorch(model: nn.Module) -> Any:
    if not kfac_pytorch.available():
        pytest.skip("kfac-pytorch is not installed")
    hp = DEFAULTS["kfac"]
    keys = ("lr", "damping", "factor_decay", "kl_clip", "factor_update_steps", "inv_update_steps")
    return kfac_pytorch.make_preconditioner(model, **{k: hp[k] for k in keys})


MAKERS: dict[str, tuple[Callable[[nn.Module], Preconditioner], tuple[str, ...], str]] = {
    "fngd": (lambda m: FNGD(m), phases.FNGD, "inversion"),
    "ngd": (lambda m: FNGD(m, share="none"), phases.NGD, "inversion"),
    "kfac": (lambda m: KFAC(m), phases.KFAC, "inverse"),
    "kfac-pytorch": (_kfac_pytorch, phases.KFAC_PYTORCH, "inverse"),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_one_surface(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    make, want_phases, first_mode = MAKERS[name]
    pre = make(model)
    assert pre.mode is None
    assert pre.phases == want_phases and set(pre.phases) <= set(phases.ALL)
    ids = torch.arange(6)
    pre.prepare(sample_ids=ids)
    model(torch.randn(6, 4)).sum().backward()
    pre.step(sample_ids=ids)
    assert pre.mode == first_mode


def test_check_finite_has_one_default() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    assert FNGD(model).check_finite is CHECK_FINITE
    assert DEFAULTS["fngd"]["check_finite"] is CHECK_FINITE
    assert build("fngd", nn.Sequential(nn.Linear(4, 3))).preconditioner.check_finite is CHECK_FINITE
