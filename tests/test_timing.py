"""StepTimer: nesting and parents (across threads), grouping by step, read-out."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from bench.cell.timing import StepTimer
from bench.records import split_phase_key
from fngd import phases
from fngd.phases import phase


@pytest.fixture
def timer():
    t = StepTimer("cpu")
    previous = phases.set_recorder(t)
    yield t
    phases.set_recorder(previous)


def _by_phase(records):
    """name -> {"parent", "seconds"} of the phases the flushed steps hold."""
    out = {}
    for r in records:
        for key, seconds in r["phases"].items():
            name, parent = split_phase_key(key)
            out[name] = {"parent": parent, "seconds": seconds}
    return out


def test_nesting_records_parents(timer):
    timer.start_step(0, 0, warmup=True)
    with phase("forward"):
        pass
    with phase("backward"), phase("fngd/weighted_sum"):
        time.sleep(0.002)
    with phase("update"):
        pass
    timer.end_step(mode="weighted_sum")
    records = timer.flush()

    assert [r["kind"] for r in records] == ["step"]  # one record, its phases inside
    assert records[0]["phase_count"] == 4
    got = _by_phase(records)
    assert set(got) == {"forward", "backward", "fngd/weighted_sum", "update"}
    assert got["forward"]["parent"] is None
    assert got["backward"]["parent"] is None
    assert got["fngd/weighted_sum"]["parent"] == "backward"
    assert got["update"]["parent"] is None
    assert got["backward"]["seconds"] >= got["fngd/weighted_sum"]["seconds"] >= 0.002
    assert records[0]["seconds"] >= got["backward"]["seconds"]
    for r in records:
        assert r["step"] == 0 and r["epoch"] == 0
        assert r["warmup"] is True and r["mode"] == "weighted_sum"


def test_parent_from_another_thread(timer):
    """The autograd engine may run a phase on its own thread inside the main thread's
    ``backward``: the parent must still be ``backward``."""
    timer.start_step(0, 0)
    with phase("backward"):

        def run():
            with phase("fngd/weighted_sum"):
                pass

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    timer.end_step()
    got = _by_phase(timer.flush())
    assert got["fngd/weighted_sum"]["parent"] == "backward"


def test_phases_inside_real_backward(timer):
    """A phase entered from a backward hook (autograd's thread) nests under backward."""
    x = torch.randn(4, 3, requires_grad=True)

    def hook(grad):
        with phase("fngd/weighted_sum"):
            return grad * 1.0

    x.register_hook(hook)
    timer.start_step(0, 0)
    with phase("backward"):
        (x * 2).sum().backward()
    timer.end_step()
    got = _by_phase(timer.flush())
    assert got["fngd/weighted_sum"]["parent"] == "backward"


def test_grouping_by_step_and_flush_empties(timer):
    for step in range(3):
        timer.start_step(step, epoch=step // 2, warmup=step == 0)
        with phase("data"):
            pass
        with phase("forward"):
            pass
        timer.end_step(mode=f"m{step}", warmup=None if step else True)
    assert timer.pending == 3
    records = timer.flush()
    assert timer.pending == 0 and timer.flush() == []
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [0, 1, 2]
    assert [r["epoch"] for r in steps] == [0, 0, 1]
    for r in records:
        assert r["mode"] == f"m{r['step']}"
        assert r["warmup"] is (r["step"] == 0)
    per_step = {r["step"]: list(r["phases"]) for r in records}
    assert per_step == {s: ["data", "forward"] for s in range(3)}


def test_phases_outside_a_step_are_not_timed(timer):
    with phase("forward"):  # e.g. evaluation
        pass
    timer.start_step(0, 0)
    timer.end_step()
    records = timer.flush()
    assert [r["kind"] for r in records] == ["step"]


def test_exception_inside_phase_still_ends_it(timer):
    timer.start_step(0, 0)
    with pytest.raises(ValueError), phase("forward"):
        raise ValueError("boom")
    with phase("update"):
        pass
    timer.end_step()
    got = _by_phase(timer.flush())
    assert got["update"]["parent"] is None


def test_discard_step_drops_it(timer):
    timer.start_step(0, 0)
    with phase("data"):
        pass
    timer.discard_step()
    assert timer.flush() == []
    timer.start_step(1, 0)
    timer.end_step()
    assert [r["step"] for r in timer.flush()] == [1]


def test_start_end_misuse_raises():
    t = StepTimer("cpu")
    with pytest.raises(RuntimeError):
        t.end_step()
    t.start_step(0, 0)
    with pytest.raises(RuntimeError):
        t.start_step(1, 0)


def test_per_phase_cost_is_small(timer):
    """A timed empty phase costs about 0.75 us on 2 shared cores: the fastest of 20 blocks,
    the one nothing else on the machine interrupted, stays there even under heavy load
    (single blocks then reach 30 us). The bound leaves 4x for a slower machine; a recorder
    doing a few microseconds of extra work per phase goes over it. The < 1 % goal on whole
    steps is checked by ``overhead``."""

    def per_phase(n: int) -> float:
        timer.start_step(0, 0)
        t0 = time.perf_counter()
        for _ in range(n):
            with phase("forward"):
                pass
        seconds = (time.perf_counter() - t0) / n
        timer.end_step()
        (record,) = timer.flush()
        assert record["phase_count"] == n and list(record["phases"]) == ["forward"]
        return seconds

    per_phase(200)  # warm-up
    assert min(per_phase(500) for _ in range(20)) < 3e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_read_at_flush():
    t = StepTimer("cuda")
    previous = phases.set_recorder(t)
    try:
        a = torch.randn(512, 512, device="cuda")
        for step in range(3):
            t.start_step(step, 0)
            with phase("forward"):
                for _ in range(10):
                    a = a @ a / 512
            t.end_step()
        records = t.flush()
    finally:
        phases.set_recorder(previous)
    assert len(records) == 3
    assert all(r["seconds"] > 0 and r["phases"]["forward"] > 0 for r in records)
    assert len(t._pool) == 12  # every event back in the pool


def test_overlapping_phases_of_two_threads_keep_the_nesting(timer):
    """A enters x, B enters y (inside x), A leaves x before B leaves y: no corruption."""
    timer.start_step(0, 0)
    x = timer.begin("x")
    y = timer.begin("y")
    timer.end(x)
    z = timer.begin("z")  # after x left, y is the open phase
    timer.end(z)
    timer.end(y)
    timer.end_step()
    got = _by_phase(timer.flush())
    assert (got["x"]["parent"], got["y"]["parent"], got["z"]["parent"]) == (None, "x", "y")


def test_many_threads_stress(timer):
    timer.start_step(0, 0)

    def work():
        for _ in range(200):
            with phase("fngd/weighted_sum"):
                pass

    with phase("backward"):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    timer.end_step()
    (record,) = timer.flush()
    assert record["phase_count"] == 801  # every entry of the four threads, and backward
    inner = {"backward>fngd/weighted_sum", "fngd/weighted_sum>fngd/weighted_sum"}
    assert set(record["phases"]) <= {"backward"} | inner
    assert "backward" in record["phases"]


class FakeEvent:
    """Stands in for torch.cuda.Event on a machine without CUDA."""

    created = 0

    def __init__(self, enable_timing=False):
        assert enable_timing
        FakeEvent.created += 1
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def elapsed_time(self, other):
        return (other.t - self.t) * 1000.0


def test_cuda_path_pools_events_and_synchronises_once_per_flush(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    FakeEvent.created = 0
    t = StepTimer("cuda")
    previous = phases.set_recorder(t)
    try:
        for epoch in range(3):
            for step in range(4):
                t.start_step(step, epoch)
                with phase("forward"):
                    pass
                with phase("backward"), phase("fngd/weighted_sum"):
                    pass
                t.end_step(mode="weighted_sum")
            assert syncs == [1] * epoch  # nothing synchronises inside an epoch
            records = t.flush()
            assert len(syncs) == epoch + 1
            assert len(records) == 4
            assert all(r["seconds"] >= 0 and r["phase_count"] == 3 for r in records)
            assert _by_phase(records)["fngd/weighted_sum"]["parent"] == "backward"
    finally:
        phases.set_recorder(previous)
    per_epoch = 4 * (2 + 3 * 2)  # step marks and three phases per step
    assert FakeEvent.created == per_epoch  # later epochs reuse the pool
    assert len(t._pool) == per_epoch
