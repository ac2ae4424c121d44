"""Inputs are checked at the boundary, once: every hyperparameter of every optimiser from
the factory, FNGD's and KFAC's constructors, ``skip_layers`` and an unbatched input. Each
mistake is one TypeError (the wrong kind) or ValueError (out of range) naming the argument
and the value given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fngd import hparams
from fngd.kfac import KFAC
from fngd.optimizers import DEFAULTS, build
from fngd.preconditioner import FNGD

# name -> (wrong types, out-of-range values, accepted edge values); a message shows a bad
# value's repr (or ``SHOWN``'s text)
CASES: dict[str, tuple[list[Any], list[Any], list[Any]]] = {
    "lr": (["0.1", True, None], [-1e-3, float("nan"), float("inf")], [0.0, 1, np.float32(0.5)]),
    "momentum": (["0.9", False], [1.0, -0.1], [0.0, 0.999, np.float64(0.5)]),
    "weight_decay": (["0", True], [-1e-4, float("inf")], [0.0, 0]),
    "nesterov": (["no", 0, 1], [], [True, False]),
    "betas": (
        ["0.9,0.999", (0.9,), ("0.9", 0.99), (True, 0.9)],
        [(1.0, 0.9), (-0.1, 0.9)],
        [(0.0, 0.0), [0.5, 0.99]],
    ),
    "eps": (["1e-8", True], [0.0, -1.0, float("nan")], [1e-30]),
    "impl": ([3], ["torch"], ["builtin"]),
    "damping": ([[0.1], True], [-1.0, float("nan")], ["geometric:1.0:0.01:10", 0.5]),
    "factor_decay": (["0.9"], [0.0, 1.5], [1.0, 1e-3]),
    "kl_clip": (["x", True], [0.0, -1.0], [None, 1e-6]),
    "factor_update_steps": ([1.0, "1", True], [0, -2], [1, np.int64(1)]),
    "inv_update_steps": ([2.5, "10"], [0, -1], [1, 20]),
    "skip_layers": ([5, [1], b"0"], ["(", ["ok", "[x"]], ["0", [], ("0", "Linear"), None]),
    "kfac_pytorch_options": (["x", ["a"]], [], [{}, None]),
    "share": ([1, None], ["all"], ["none", "sample"]),
    "scope": ([None, 0], ["model"], ["network", "layer"]),
    "damping_mode": ([1], ["abs"], ["relative"]),
    "normalize": (["no", 0, 1, None], [], [True, False]),
    "grad_scaler": ([1.0, "scaler"], [], [None, lambda: 1.0]),
    "refresh_epochs": (["2", 2.0, True], [0, -1], [None, 1, np.int64(3)]),
    "steps_per_epoch": ([2.5, "4", True], [-3, 0], [None, 1, 4]),
    "loss_reduction": ([1], ["avg"], ["sum", "mean"]),
    "gram": ([1], ["dense"], ["explicit", "pairwise"]),
    "check_finite": (["false", 0, None], [], [True, False]),
    "distributed": ([1], ["all"], ["local"]),
    "native": ([True], ["yes"], ["off"]),
}

# what the message shows of a value whose repr it does not quote (the offending element)
SHOWN = {("skip_layers", "[1]"): "1 (int)", ("skip_layers", "['ok', '[x']"): "'[x'"}
# damping must be > 0 for KFAC (its eigenvalue division), >= 0 for FNGD and NGD
KFAC_ONLY_BAD = {"damping": 0.0}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


def _pairs(which: int) -> list[tuple[str, str, Any]]:
    return [
        (opt, name, value)
        for opt, defaults in DEFAULTS.items()
        for name in defaults
        for value in CASES[name][which]
    ]


def _shown(name: str, value: Any) -> str:
    return SHOWN.get((name, repr(value)), repr(value))


def test_every_hyperparameter_has_a_rule_and_a_case() -> None:
    names = {name for defaults in DEFAULTS.values() for name in defaults}
    assert names <= set(hparams.RULES)
    assert names == set(CASES)
    # and every optimiser's defaults pass their own rules
    for opt, defaults in DEFAULTS.items():
        hparams.check_all(defaults, owner=opt, positive_damping=opt == "kfac")


@pytest.mark.parametrize(("opt", "name", "value"), _pairs(0))
def test_a_wrong_type_is_one_type_error_naming_optimiser_argument_and_value(
    opt: str, name: str, value: Any
) -> None:
    with pytest.raises(TypeError) as err:
        build(opt, model(), **{name: value})
    msg = str(err.value)
    assert msg.startswith(f"{opt}: {name}"), msg
    assert _shown(name, value) in msg, msg


@pytest.mark.parametrize(("opt", "name", "value"), _pairs(1))
def test_an_out_of_range_value_is_one_value_error_naming_argument_and_value(
    opt: str, name: str, value: Any
) -> None:
    with pytest.raises(ValueError) as err:
        build(opt, model(), **{name: value})
    msg = str(err.value)
    assert msg.startswith(f"{opt}: "), msg
    assert name in msg and _shown(name, value) in msg, msg


def test_kfac_damping_must_be_positive_fngd_may_be_zero() -> None:
    with pytest.raises(ValueError, match=r"^kfac: damping must be finite and > 0, got 0.0"):
        build("kfac", model(), damping=KFAC_ONLY_BAD["damping"])
    assert build("fngd", model(), damping=0.0).preconditioner.damping == 0.0


@pytest.mark.parametrize(("opt", "name", "value"), _pairs(2))
def test_valid_edge_values_are_accepted(opt: str, name: str, value: Any) -> None:
    extra = {"share": "iteration", "steps_per_epoch": 2} if name == "refresh_epochs" else {}
    built = build(opt, model(), **{name: value, **extra})
    kept = built.hparams[name]
    if name == "betas":
        assert kept == tuple(value)
    elif name == "skip_layers":
        assert kept == hparams.patterns(value)
    elif name == "kfac_pytorch_options":
        assert kept == {}
    elif name not in ("damping", "grad_scaler"):  # records keep those as text
        assert kept == value


def test_the_literal_mistakes_of_the_issue() -> None:
    with pytest.raises(
        TypeError, match=r"^fngd: lr must be a finite number >= 0, got '0.1' \(str\)"
    ):
        build("fngd", model(), lr="0.1")
    with pytest.raises(TypeError, match=r"^fngd: normalize must be True or False, got 'no'"):
        build("fngd", model(), normalize="no")
    with pytest.raises(ValueError, match=r"^fngd: steps_per_epoch must be None or a whole "):
        build("fngd", model(), steps_per_epoch=-3)


# -- the constructors, directly --------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "start"),
    [
        ({"normalize": "no"}, TypeError, "normalize must be True or False, got 'no' (str)"),
        ({"check_finite": "false"}, TypeError, "check_finite must be True or False"),
        ({"steps_per_epoch": -3}, ValueError, "steps_per_epoch must be None or a whole number"),
        ({"steps_per_epoch": 2.5}, TypeError, "steps_per_epoch must be None or a whole number"),
        ({"refresh_epochs": "2"}, TypeError, "refresh_epochs must be None or a whole number"),
        ({"refresh_epochs": 0}, ValueError, "refresh_epochs must be None or a whole number"),
        ({"share": "all"}, ValueError, "unknown share 'all'; valid: none, sample, iteration"),
        ({"native": True}, TypeError, "native must be one of auto, on, off, got True (bool)"),
        ({"grad_scaler": 2.0}, TypeError, "grad_scaler must be None, a GradScaler"),
        ({"skip_layers": "("}, ValueError, "skip_layers: '(' is not a regular expression"),
    ],
)
def test_fngd_constructor_checks_its_arguments(kwargs, error, start) -> None:
    with pytest.raises(error) as err:
        FNGD(model(), **kwargs)
    assert str(err.value).startswith(start), err.value


@pytest.mark.parametrize(
    ("kwargs", "error", "start"),
    [
        ({"lr": "0.1"}, TypeError, "lr must be a finite number >= 0, got '0.1' (str)"),
        ({"lr": True}, TypeError, "lr must be a finite number >= 0, got True (bool)"),
        ({"factor_decay": 0.0}, ValueError, "factor_decay must be a finite number in (0, 1]"),
        ({"factor_update_steps": 2.5}, TypeError, "factor_update_steps must be a whole number"),
        ({"inv_update_steps": 0}, ValueError, "inv_update_steps must be a whole number >= 1"),
        ({"kl_clip": "off"}, TypeError, "kl_clip must be None or a finite number > 0"),
        ({"update_factors_in_hook": "no"}, TypeError, "update_factors_in_hook must be True or"),
        ({"inv_dtype": "float64"}, TypeError, "inv_dtype must be a torch.dtype"),
        ({"skip_layers": "["}, ValueError, "skip_layers: '[' is not a regular expression"),
    ],
)
def test_kfac_constructor_checks_its_arguments(kwargs, error, start) -> None:
    with pytest.raises(error) as err:
        KFAC(model(), **kwargs)
    assert str(err.value).startswith(start), err.value


def test_kfac_takes_schedules_of_the_step_and_checks_an_assigned_lr() -> None:
    pre = KFAC(model(), lr=lambda t: 0.1, factor_decay=lambda t: 0.9, inv_update_steps=1)
    assert pre.lr == pytest.approx(0.1)
    pre.lr = 0.05
    assert pre.lr == 0.05
    with pytest.raises(TypeError, match=r"^lr must be a finite number >= 0, got '0.2'"):
        pre.lr = "0.2"


# -- skip_layers: one string is one pattern ---------------------------------------------
def test_a_string_of_skip_layers_is_one_pattern() -> None:
    # read as characters, "^0$" would skip everything ("^" and "$" match any name)
    assert [b.name for b in FNGD(model(), skip_layers="^0$").blocks] == ["2"]
    assert list(KFAC(model(), skip_layers="^0$").blocks) == ["2"]
    built = build("fngd", model(), skip_layers="^0$")
    assert [b.name for b in built.preconditioner.blocks] == ["2"]
    assert built.hparams["skip_layers"] == ["^0$"]
    assert list(build("kfac", model(), skip_layers="^0$").preconditioner.blocks) == ["2"]


def test_a_bad_regular_expression_names_skip_layers_and_the_pattern() -> None:
    with pytest.raises(ValueError, match=r"^fngd: skip_layers: '\(' is not a regular expr"):
        build("fngd", model(), skip_layers="(")
    with pytest.raises(ValueError, match=r"^kfac: skip_layers: '\[x' is not a regular expr"):
        build("kfac", model(), skip_layers=["0", "[x"])


# -- an unbatched input ----------------------------------------------------------------
def test_an_unbatched_linear_input_names_the_module_and_the_shape() -> None:
    m = model()
    FNGD(m, share="none")
    with pytest.raises(ValueError) as err:
        m(torch.randn(4))
    msg = str(err.value)
    assert msg.startswith("'0' (Linear): FNGD needs a batched input") and "(4,)" in msg, msg
    assert m(torch.randn(2, 4)).shape == (2, 3)  # a batch goes through
    assert m(torch.randn(2, 7, 4)).shape == (2, 7, 3)  # and a sequence batch


def test_an_unbatched_conv2d_input_names_the_module_and_the_shape() -> None:
    m = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    FNGD(m, share="none")
    with pytest.raises(ValueError) as err:
        m[0](torch.randn(3, 5, 5))
    msg = str(err.value)
    assert msg.startswith("'0' (Conv2d): FNGD needs a batched input (N, C, H, W)"), msg
    assert "(3, 5, 5)" in msg
    assert m(torch.randn(2, 3, 5, 5)).shape == (2, 2)


def test_an_unbatched_conv1d_input_names_the_module_and_the_shape() -> None:
    m = nn.Sequential(nn.Conv1d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 3, 2))
    FNGD(m, share="none")
    with pytest.raises(
        ValueError, match=r"^'0' \(Conv1d\): FNGD needs a batched input \(N, C, L\)"
    ):
        m[0](torch.randn(3, 5))
    assert m(torch.randn(2, 3, 5)).shape == (2, 2)
