"""Edge behaviour of the numerical core: flop counts, Gram dispatch, the damped solve and
its fallbacks, damping schedules, coefficient tables and the staleness probe's state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fngd import FNGD, damping, gram
from fngd.coefficients import IterationTable, SampleTable
from fngd.solve import NonFiniteGradientError, damped_solve, shift

F64 = torch.float64


# --- gram -------------------------------------------------------------------------------


def test_flop_counts_are_exact() -> None:
    n, t, p, q = 3, 4, 5, 7
    assert gram.pairwise_flops(n, t, p, q) == 2 * 9 * 16 * 12 + 9 * 16
    assert gram.explicit_flops(n, t, p, q) == 2 * 3 * 4 * 5 * 7 + 2 * 9 * 5 * 7


def test_choose_prefers_pairwise_on_a_tie() -> None:
    assert gram.pairwise_flops(2, 1, 1, 3) == gram.explicit_flops(2, 1, 1, 3) == 36
    assert gram.choose(2, 1, 1, 3) == "pairwise"


@pytest.mark.parametrize("t", [1, 2, 3])
def test_pairwise_gram_matches_explicit(t: int) -> None:
    g = torch.Generator().manual_seed(t)
    a = torch.randn(5, t, 4, generator=g, dtype=F64)
    d = torch.randn(5, t, 3, generator=g, dtype=F64)
    torch.testing.assert_close(gram.gram_pairwise(a, d), gram.gram_explicit(a, d))


@pytest.mark.parametrize("path", ["pairwise", "explicit"])
def test_gram_runs_the_requested_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("pairwise", "explicit"):
        real = getattr(gram, f"gram_{name}")

        def spy(a: torch.Tensor, d: torch.Tensor, _n: str = name, _f=real) -> torch.Tensor:
            calls.append(_n)
            return _f(a, d)

        monkeypatch.setattr(gram, f"gram_{name}", spy)
    a, d = torch.ones(2, 1, 3, dtype=F64), torch.ones(2, 1, 2, dtype=F64)
    torch.testing.assert_close(gram.gram(a, d, path), torch.full((2, 2), 6.0, dtype=F64))
    assert calls == [path]


# --- solve ------------------------------------------------------------------------------


def test_shift_defaults_to_constant_and_lists_valid_modes() -> None:
    k = torch.eye(4, dtype=F64).expand(2, 4, 4)
    assert shift(k, 0.25) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid: constant, relative"):
        shift(k, 0.25, "bogus")


def test_non_finite_error_names_blocks_by_index_and_gives_advice() -> None:
    k = torch.eye(2, dtype=F64).repeat(3, 1, 1)
    k[1, 0, 0] = float("nan")
    with pytest.raises(
        NonFiniteGradientError, match=r"block\(s\) 1; check the loss and the learning rate"
    ):
        damped_solve(k, 0.1)


def _one_bad_block() -> torch.Tensor:
    # Block 0: Cholesky succeeds but 1 / 1e-320 overflows, so its result is not finite.
    bad = torch.diag(torch.tensor([1e-320, 1.0, 1.0], dtype=F64))
    return torch.stack([bad, torch.eye(3, dtype=F64)])


def test_only_the_failing_block_falls_back() -> None:
    c, report = damped_solve(_one_bad_block(), 0.0)
    assert report.methods[0].startswith("jitter(")
    assert report.methods[1] == "cholesky"
    torch.testing.assert_close(c[1], torch.ones(3, dtype=F64))
    assert torch.isfinite(c).all()


def test_fallback_uses_its_own_blocks_shift() -> None:
    c, report = damped_solve(_one_bad_block(), torch.tensor([0.0, 0.5], dtype=F64))
    assert report.methods == [report.methods[0], "cholesky"]
    assert report.methods[0].startswith("jitter(")
    torch.testing.assert_close(c[0, 1:], torch.ones(2, dtype=F64), rtol=1e-4, atol=0)
    torch.testing.assert_close(c[1], torch.full((3,), 1 / 1.5, dtype=F64))


def test_solve_makes_its_tensors_on_ks_device_not_the_default_one() -> None:
    k = _one_bad_block()
    with torch.device("meta"):
        c, report = damped_solve(k, 0.0)
    assert c.device.type == "cpu"
    assert report.fallbacks == 1


def test_infinite_shift_ends_in_pinv_with_zero_coefficients() -> None:
    c, report = damped_solve(torch.eye(2, dtype=F64)[None], float("inf"))
    assert report.methods == ["pinv"]
    torch.testing.assert_close(c, torch.zeros(1, 2, dtype=F64))


# --- damping schedules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [(0.0, 1.0, 3), (1.0, 0.0, 3), (1.0, 1.0, 0), (-1.0, 1.0, 3), (1.0, -1.0, 3)]
)
def test_geometric_rejects_bad_arguments_naming_the_rule(args: tuple) -> None:
    with pytest.raises(ValueError, match="geometric damping needs start, end > 0"):
        damping.Geometric(*args)


def test_geometric_and_step_accept_their_boundaries() -> None:
    assert damping.Geometric(1.0, 0.5, 1)(1) == pytest.approx(0.5)
    s = damping.Step(0.0, 0.5, 1)
    assert s(3) == 0.0
    assert damping.Step(2.0, 0.5, 1)(0) == 2.0
    assert damping.Step(2.0, 0.5, 1)(1) == 1.0


@pytest.mark.parametrize("args", [(-1.0, 0.5, 1), (1.0, 0.0, 1), (1.0, 0.5, 0)])
def test_step_rejects_bad_arguments_naming_the_rule(args: tuple) -> None:
    with pytest.raises(ValueError, match="step damping needs start >= 0"):
        damping.Step(*args)


def test_bad_spec_message_lists_the_step_format() -> None:
    with pytest.raises(ValueError, match="'step:START:FACTOR:EVERY'"):
        damping.parse("cosine:1")


def test_spec_of_falls_back_to_repr() -> None:
    def sched(step: int) -> float:
        return 0.1

    assert damping.spec_of(sched) == repr(sched)
    assert damping.spec_of(damping.Step(1.0, 0.5, 2)) == "step:1.0:0.5:2"


# --- coefficient tables -------------------------------------------------------------------


def test_fresh_sample_table_state() -> None:
    t = SampleTable(3)
    assert t.all_blocks_known.shape == (0,)
    state = t.state_dict()
    assert state["values"] is None
    assert state["stored_epoch"].dtype == torch.int64
    assert tuple(state["stored_epoch"].shape) == (3, 0)


def test_sample_table_lookup_edges_and_exact_memory() -> None:
    t = SampleTable(2)
    t.store(torch.tensor([0]), torch.tensor([[1.0], [2.0]], dtype=F64), 0, [0, 1])
    assert t.nbytes() == 2 * 1 * 8 + 2 * 1 * 8 + 1  # values, stored epochs, known flag
    assert t.lookup(torch.tensor([], dtype=torch.int64), 0) is None
    c, known = t.lookup(torch.tensor([0]), 0)
    torch.testing.assert_close(c, torch.tensor([[1.0], [2.0]], dtype=F64))
    assert known.dtype == np.bool_ and known.tolist() == [True, True]
    t.store(torch.tensor([], dtype=torch.int64), torch.zeros(2, 0, dtype=F64), 0, [0])
    assert t.nbytes() == 2 * 1 * 8 + 2 * 1 * 8 + 1


def test_sample_table_refresh_uses_epoch_windows() -> None:
    t = SampleTable(1, refresh_epochs=2)
    t.store(torch.tensor([0, 1]), torch.ones(1, 2, dtype=F64), 1, [0])
    assert t.lookup(torch.tensor([0, 1]), 1) is not None
    assert t.lookup(torch.tensor([0, 1]), 2) is None


def test_sample_table_keeps_its_dtype_across_stores() -> None:
    t = SampleTable(1)
    t.store(torch.tensor([1]), torch.tensor([[0.5]], dtype=F64), 0, [0])
    t.store(torch.tensor([0]), torch.tensor([[1.0]], dtype=torch.float32), 0, [0])
    c, _ = t.lookup(torch.tensor([0, 1]), 0)
    assert c.dtype == F64
    torch.testing.assert_close(c, torch.tensor([[1.0, 0.5]], dtype=F64))
    assert t.state_dict()["stored_epoch"].dtype == torch.int64


def test_sample_table_state_round_trip_to_another_device() -> None:
    src = SampleTable(2)
    src.store(torch.tensor([0, 3]), torch.ones(2, 2, dtype=F64), 5, [1])
    dst = SampleTable(2)
    dst.load_state_dict(src.state_dict(), device=torch.device("meta"))
    assert dst.values.device.type == "meta"
    assert dst.stored_epoch.dtype == np.int64
    np.testing.assert_array_equal(dst.stored_epoch, [[-1, -1, -1, -1], [5, -1, -1, 5]])


def test_iteration_table_keeps_earlier_blocks_and_marks_others_unknown() -> None:
    t = IterationTable(3)
    t.store(0, torch.tensor([[1.0], [2.0], [3.0]], dtype=F64), 0, [0])
    c, known = t.lookup(0, 1, 0)
    assert known.tolist() == [True, False, False]
    t.store(0, torch.tensor([[9.0], [8.0], [7.0]], dtype=F64), 0, [1])
    c, known = t.lookup(0, 1, 0)
    assert known.tolist() == [True, True, False]
    torch.testing.assert_close(c[:2], torch.tensor([[1.0], [8.0]], dtype=F64))
    assert t.nbytes() == 3 * 8 + 3 * 8  # values and stored epochs (int64)
    assert t.state_dict()["stored_epoch"][0].dtype == torch.int64


def test_iteration_table_expired_entry_is_none() -> None:
    t = IterationTable(1, refresh_epochs=1)
    t.store(0, torch.ones(1, 2, dtype=F64), 0, [0])
    assert t.lookup(0, 2, 0) is not None
    assert t.lookup(0, 2, 1) is None


def test_iteration_table_state_round_trip_to_another_device() -> None:
    src = IterationTable(2)
    src.store(4, torch.ones(2, 3, dtype=F64), 2, [0, 1])
    dst = IterationTable(2)
    dst.load_state_dict(src.state_dict(), device=torch.device("meta"))
    assert dst.values[4].device.type == "meta"
    assert dst.stored_epoch[4].dtype == np.int64
    assert dst.stored_epoch[4].tolist() == [2, 2]


# --- staleness ----------------------------------------------------------------------------


def test_staleness_result_is_empty_when_the_probe_backward_raises() -> None:
    model = nn.Sequential(nn.Linear(3, 2)).double()
    pre = FNGD(model)
    with pytest.raises(RuntimeError, match="boom"), pre.staleness(torch.tensor([0, 1])) as p:
        raise RuntimeError("boom")
    assert p.result == {}
