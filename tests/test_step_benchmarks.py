"""The pytest-benchmark suites (``bench/suite/test_step_time.py``,
``bench/suite/test_fngd_step.py``) time whole steps: on CUDA a step's kernels run after its
Python returns, so the benchmarked call must synchronise the device after the step's work,
once per call, or it times launches only.

Checked on a machine without CUDA through a stand-in device: the held step is built on the
CPU but says ``cuda``, ``torch.cuda.synchronize`` is replaced by a logger, and a stand-in
``benchmark`` fixture runs ``pedantic`` as pytest-benchmark does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch

import bench.suite.test_fngd_step as fngd_step_suite
import bench.suite.test_step_time as step_time_suite
from bench.host.env import cpu_threads
from bench.measure.step_variants import STEP_VARIANTS, HeldStep, prepare
from fngd import phases


class PhaseLog:
    """A phase recorder that logs each phase's end into the shared log."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def begin(self, name: str) -> str:
        return name

    def end(self, token: str) -> None:
        self.log.append(token)


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture: ``pedantic`` runs ``setup`` and then the
    timed call, once per (warm-up) round, and logs ``round`` as each timed call starts."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.group: str | None = None
        self.extra_info: dict[str, Any] = {}
        self.calls = 0

    def pedantic(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        setup: Callable[[], Any] | None = None,
        teardown: Callable[..., Any] | None = None,
        rounds: int = 1,
        warmup_rounds: int = 0,
        iterations: int = 1,
    ) -> None:
        for _ in range(warmup_rounds + rounds):
            if setup is not None:
                setup()
            for _ in range(iterations):
                self.log.append("round")
                target(*args, **(kwargs or {}))
                self.calls += 1


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """As the suites run: one intra-op thread (spinning workers crawl on a busy machine)."""
    with cpu_threads(1, "cpu"):
        yield


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Phase ends and device synchronisations, in the order they happen."""
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: events.append("sync"))
    previous = phases.set_recorder(PhaseLog(events))
    yield events
    phases.set_recorder(previous)


def _on_stand_in_cuda(monkeypatch: pytest.MonkeyPatch, suite: ModuleType) -> None:
    """The suite runs on the CPU, but the step it benchmarks belongs to a ``cuda`` device."""

    def prepare_on_cuda(workload_name: str, variant: Any, device: str, size: str) -> HeldStep:
        held = prepare("mlp-random-32", variant, "cpu", "small")
        cell = dataclasses.replace(held.cell, device=torch.device("cuda"))
        return dataclasses.replace(held, cell=cell)

    monkeypatch.setattr(suite, "prepare", prepare_on_cuda)
    if hasattr(suite, "_phase_medians"):  # CUDA events, not the benchmarked call: not here
        monkeypatch.setattr(suite, "_phase_medians", lambda held: {})
    monkeypatch.setattr(suite, "DEVICE", "cpu")


def _assert_synchronised_after_each_call(log: list[str], calls: int) -> None:
    rounds = "|".join(log).split("round")[1:]
    assert len(rounds) == calls > 0
    for i, segment in enumerate(rounds):
        events = [e for e in segment.split("|") if e]
        assert events.count("sync") == 1, (i, events)
        assert events[-1] == "sync", (i, events)  # after the step's work
        assert "update" in events, (i, events)  # the step did run


@pytest.mark.parametrize("variant", ["sgd", "fngd-weighted-sum"])
def test_step_time_suite_synchronises_after_every_step(
    monkeypatch: pytest.MonkeyPatch, log: list[str], variant: str
) -> None:
    _on_stand_in_cuda(monkeypatch, step_time_suite)
    benchmark = FakeBenchmark(log)
    step_time_suite.test_step_time(benchmark, "mlp-random-32", STEP_VARIANTS[variant])
    _assert_synchronised_after_each_call(log, benchmark.calls)


def test_fngd_step_suite_synchronises_after_every_step(
    monkeypatch: pytest.MonkeyPatch, log: list[str]
) -> None:
    _on_stand_in_cuda(monkeypatch, fngd_step_suite)
    benchmark = FakeBenchmark(log)
    fngd_step_suite.test_mlp_step(benchmark, "fngd-inversion", 128)
    _assert_synchronised_after_each_call(log, benchmark.calls)
