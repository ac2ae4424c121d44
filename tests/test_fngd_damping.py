"""Damping strategies: relative shift, schedules, normalised coefficients, a loss scale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fngd import FNGD, damping
from fngd.optimizers import DEFAULTS, build
from fngd.solve import shift
from tests.fngd_reference import (
    block_grad,
    natural_gradient,
    network_coefficients,
    per_sample_block_grads,
    rel_err,
)
from tests.test_fngd_exact import CASES, squared_error

LAM = 0.1
BLOCKS = ["0", "2"]


def make() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return model, torch.randn(6, 5).double(), torch.randn(6, 3).double()


def grads(model: nn.Module, pre: FNGD, x: torch.Tensor, y: torch.Tensor, s: float = 1.0,
          ids: torch.Tensor | None = None) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    ids = torch.arange(len(x)) if ids is None else ids
    pre.prepare(sample_ids=ids)
    (s * squared_error(model(x), y).mean()).backward()
    pre.step(sample_ids=ids)
    return [p.grad.clone() for p in model.parameters()]


# -- relative damping --------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layer", "network"])
@pytest.mark.parametrize("share", ["none", "sample"])
def test_relative_damping_scales_the_step_by_one_over_s(scope: str, share: str) -> None:
    s = 37.0
    runs = []
    for scale in (1.0, s):  # the inversion, then (share="sample") a reuse step
        model, x, y = make()
        pre = FNGD(model, damping=LAM, damping_mode="relative", scope=scope, share=share)
        runs.append([grads(model, pre, x, y, scale) for _ in range(2)])
    assert pre.mode == ("inversion" if share == "none" else "weighted_sum")
    for base, scaled in zip(*runs, strict=True):
        for a, b in zip(base, scaled, strict=True):
            assert rel_err(b * s, a) < 1e-10


@pytest.mark.parametrize("scope", ["layer", "network"])
def test_constant_damping_does_not(scope: str) -> None:
    s = 37.0
    model, x, y = make()
    pre = FNGD(model, damping=LAM, damping_mode="constant", scope=scope, share="none")
    base, scaled = grads(model, pre, x, y), grads(model, pre, x, y, s)
    assert rel_err(scaled[0] * s, base[0]) > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_relative_damping_is_ngd_with_lambda_times_mean_eigenvalue(case: str) -> None:
    """The shift ``lam tr(K) / N`` on K is a Fisher damping of ``lam tr(K) / N^2``."""
    torch.manual_seed(0)
    model, blocks, x, y = CASES[case](True)
    model, x, y = model.double(), x.double(), y.double()
    n = x.shape[0]
    g = per_sample_block_grads(model, x, y, squared_error, blocks)
    pre = FNGD(model, damping=LAM, share="none", damping_mode="relative")
    squared_error(model(x), y).mean().backward()
    pre.step()
    for name in blocks:
        lam = LAM * float((g[name] ** 2).sum()) / n**2
        assert rel_err(block_grad(model, name), natural_gradient(g[name], lam)) < 1e-8, name


def test_shift_helper() -> None:
    k = torch.stack([torch.eye(4) * 2, torch.eye(4) * 6]).double()
    assert shift(k, 0.5, "constant") == 2.0
    assert torch.equal(shift(k, 0.5, "relative"), torch.tensor([1.0, 3.0]).double())
    with pytest.raises(ValueError, match="damping_mode"):
        shift(k, 0.5, "adaptive")
    with pytest.raises(ValueError, match="damping_mode"):
        FNGD(make()[0], damping_mode="adaptive")


# -- schedules -----------------------------------------------------------------------------
def test_geometric_and_step_schedules() -> None:
    geo = damping.Geometric(0.1, 0.001, 100)
    assert geo(0) == pytest.approx(0.1) and geo(50) == pytest.approx(0.01)
    assert geo(100) == pytest.approx(0.001) and geo(10_000) == pytest.approx(0.001)
    st = damping.Step(0.1, 0.5, 10)
    assert st(9) == pytest.approx(0.1) and st(10) == pytest.approx(0.05)
    assert st(25) == pytest.approx(0.025)


@pytest.mark.parametrize(
    "schedule", [damping.Geometric(0.1, 0.001, 1000), damping.Step(0.1, 0.5, 100)]
)
def test_spec_round_trips(schedule: damping.Geometric | damping.Step) -> None:
    assert damping.parse(schedule.spec) == schedule
    assert damping.describe(schedule) == schedule.spec
    assert damping.describe(schedule.spec) == schedule.spec


def test_plain_numbers_stay_numbers() -> None:
    assert damping.parse("0.01") == 0.01
    assert damping.describe("0.01") == 0.01 and damping.describe(0.003) == 0.003


@pytest.mark.parametrize(
    "spec", ["geometric:0.1:0.001", "cosine:1:2:3", "geometric:a:b:c", "step:0.1:0:10", "x"]
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="damping"):
        damping.parse(spec)


def test_schedule_is_read_at_each_solve() -> None:
    values = [0.5, 0.05]
    model, x, y = make()
    pre = FNGD(model, damping=lambda step: values[step], share="none")
    scheduled = [grads(model, pre, x, y) for _ in values]
    for value, got in zip(values, scheduled, strict=True):
        m2 = make()[0]
        want = grads(m2, FNGD(m2, damping=value, share="none"), x, y)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert not torch.equal(scheduled[0][0], scheduled[1][0])


def test_factory_accepts_and_records_a_spec() -> None:
    spec = "geometric:0.1:0.001:1000"
    opt = build("fngd", make()[0], damping=spec)
    assert opt.hparams["damping"] == spec
    assert opt.preconditioner.damping == damping.Geometric(0.1, 0.001, 1000)
    opt = build("ngd", make()[0], damping=damping.Step(0.1, 0.5, 10))
    assert opt.hparams["damping"] == "step:0.1:0.5:10"
    assert build("fngd", make()[0]).hparams["damping"] == DEFAULTS["fngd"]["damping"]
    for key in ("scope", "damping_mode", "normalize", "grad_scaler"):
        assert key in DEFAULTS["fngd"] and key in DEFAULTS["ngd"]
        assert key in build("ngd", make()[0]).hparams


# -- normalised coefficients -----------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layer", "network"])
def test_normalised_coefficients_sum_to_one_in_both_phases(scope: str) -> None:
    model, x, y = make()
    ids = torch.arange(6)
    pre = FNGD(model, damping=LAM, scope=scope, normalize=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    g = per_sample_block_grads(model, x, y, squared_error, BLOCKS)
    if scope == "network":
        c = network_coefficients(g, LAM)
        expected = {k: c / c.sum() for k in BLOCKS}
    else:
        eye = torch.eye(6).double()
        cs = {k: torch.linalg.solve(v @ v.T + 6 * LAM * eye, torch.ones(6).double())
              for k, v in g.items()}
        expected = {k: v / v.sum() for k, v in cs.items()}
    grads(model, pre, x, y, ids=ids)
    assert pre.mode == "inversion"
    table = pre.sample_table.values
    assert table is not None and torch.allclose(table.sum(1), torch.ones(len(table)).double())
    for name in BLOCKS:
        assert rel_err(block_grad(model, name), g[name].T @ expected[name]) < 1e-8, name
    opt.step()
    g2 = per_sample_block_grads(model, x, y, squared_error, BLOCKS)
    grads(model, pre, x, y, ids=ids)
    assert pre.mode == "weighted_sum"
    for name in BLOCKS:
        assert rel_err(block_grad(model, name), g2[name].T @ expected[name]) < 1e-8, name


# -- a loss scale -------------------------------------------------------------------------------
S = 1024.0


def _scaled_run(scope: str, scaler: object) -> list[list[torch.Tensor]]:
    """Two epochs of two steps with the loss multiplied by S (a GradScaler's scale)."""
    model, x, y = make()
    pre = FNGD(model, damping=LAM, scope=scope, grad_scaler=scaler)
    out = []
    for ids in [torch.arange(3), torch.arange(3, 6)] * 2:
        out.append(grads(model, pre, x[ids], y[ids], S if scaler is not None else 1.0, ids))
        with torch.no_grad():  # a fixed update, so both runs see the same weights
            for p in model.parameters():
                p -= 0.1 * torch.sign(p.grad)
    return out


@pytest.mark.parametrize("scope", ["layer", "network"])
def test_grad_scaler_keeps_the_damping(scope: str) -> None:
    plain = _scaled_run(scope, None)
    scaled = _scaled_run(scope, lambda: S)
    for a_step, b_step in zip(plain, scaled, strict=True):
        for a, b in zip(a_step, b_step, strict=True):
            assert rel_err(b / S, a) < 1e-10


def test_without_grad_scaler_the_damping_shrinks() -> None:
    model, x, y = make()
    plain = grads(model, FNGD(model, damping=LAM, share="none"), x, y)
    m2 = make()[0]
    scaled = grads(m2, FNGD(m2, damping=LAM, share="none"), x, y, S)
    assert rel_err(scaled[0] / S, plain[0]) > 1e-3


def test_a_torch_grad_scaler_is_read_through_get_scale() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=S)
    model, x, y = make()
    plain = grads(model, FNGD(model, damping=LAM, share="none"), x, y)
    m2 = make()[0]
    scaled = grads(m2, FNGD(m2, damping=LAM, share="none", grad_scaler=scaler), x, y, S)
    for a, b in zip(plain, scaled, strict=True):
        assert rel_err(b / S, a) < 1e-10
    assert build("fngd", make()[0], grad_scaler=scaler).hparams["grad_scaler"] == "GradScaler"


def test_overflow_under_a_grad_scaler_writes_non_finite_grads_and_stores_nothing() -> None:
    model, x, y = make()
    pre = FNGD(model, damping=LAM, grad_scaler=lambda: S)
    x = x.clone()
    x[1, 0] = float("inf")
    grads(model, pre, x, y)
    assert not torch.isfinite(model[0].weight.grad).all()
    assert pre.sample_table.values is None


# -- what a damping may be ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), "-0.1", "inf"])
def test_bad_constant_damping_is_one_value_error_naming_it(bad: float | str) -> None:
    with pytest.raises(ValueError, match=r"^damping must be finite and >= 0, got") as err:
        FNGD(make()[0], damping=bad)
    assert repr(float(bad)) in str(err.value)


def test_zero_damping_is_allowed() -> None:
    assert FNGD(make()[0], damping=0.0).damping == 0.0


@pytest.mark.parametrize("spec", ["geometric:nan:0.1:10", "geometric:1:inf:10", "step:inf:0.5:10",
                                  "step:0.1:nan:10"])
def test_specs_with_non_finite_numbers_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="damping"):
        FNGD(make()[0], damping=spec)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_a_schedule_value_is_checked_at_the_solve_that_uses_it(value: float) -> None:
    model, x, y = make()
    pre = FNGD(model, damping=lambda step: LAM if step == 0 else value, share="none")
    grads(model, pre, x, y)  # step 0: LAM
    with pytest.raises(ValueError, match=r"^damping must be finite and >= 0, got") as err:
        grads(model, pre, x, y)
    assert repr(value) in str(err.value) and "at step 1" in str(err.value)
    assert pre.state is None  # the step was dropped, as any failed step is


def test_damping_of_another_type_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="^damping: expected a number"):
        FNGD(make()[0], damping=[0.1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^damping: expected a number"):
        FNGD(make()[0], damping=True)  # type: ignore[arg-type]


def test_ngd_and_kfac_read_the_same_specs() -> None:
    spec = "geometric:1.0:0.01:200"
    schedule = damping.Geometric(1.0, 0.01, 200)
    for name in ("fngd", "ngd", "kfac"):
        opt = build(name, make()[0], damping=spec)
        assert opt.hparams["damping"] == spec, name
        pre = opt.preconditioner
        # FNGD keeps the schedule; KFAC's damping is its value at the current step
        assert pre.damping == (schedule(0) if name == "kfac" else schedule), name
