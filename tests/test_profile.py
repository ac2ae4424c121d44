"""``bench.measure.profile``: traces of every phase (FNGD inversion and weighted sum, KFAC with and
without the inverse), TensorBoard's profiler plugin can load them, and the summary records."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.measure import profile, trace_summary
from bench.records import read_jsonl
from fngd import phases

WORKLOAD = "mlp-digits"
STEPS = 4
MAX_STEPS = 3  # FNGD: steps 1, 2 invert (epoch 0), 3, 4 sum (epoch 1)

EXPECTED = {
    "fngd": set(phases.COMMON) | set(phases.FNGD),
    "kfac": set(phases.COMMON) | set(phases.KFAC),
}
MODES = {"fngd": {"inversion", "weighted_sum"}, "kfac": {"inverse", "no_inverse"}}
COMMON_FIELDS = (
    "run_id",
    "workload",
    "optimizer",
    "impl",
    "hparams",
    "seed",
    "device",
    "device_name",
    "data_source",
    "batch_size",
    "torch_version",
    "cuda_version",
    "git_commit",
    "time",
)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def runs(out) -> dict[str, profile.ProfileResult]:
    """One FNGD profile (plain JSON) and one KFAC profile (gzipped), shared by the tests."""
    return {
        "fngd": profile.profile_run(
            WORKLOAD, "fngd", out, "cpu", STEPS, 0, max_steps_per_epoch=MAX_STEPS
        ),
        "kfac": profile.profile_run(
            WORKLOAD, "kfac", out, "cpu", STEPS, 0, max_steps_per_epoch=MAX_STEPS, use_gzip=True
        ),
    }


def _events(path: Path) -> list[dict]:
    return trace_summary.load_trace(path)["traceEvents"]


@pytest.mark.parametrize("opt", ["fngd", "kfac"])
def test_trace_has_every_phase_and_one_profiler_step_per_active_step(runs, out, opt):
    result = runs[opt]
    assert result.run_dir == out / WORKLOAD / opt
    (trace,) = result.traces
    assert trace.parent == result.run_dir
    assert trace.name.endswith(".pt.trace.json.gz" if opt == "kfac" else ".pt.trace.json")
    if opt == "kfac":  # really gzipped, and valid JSON once unzipped
        assert trace.read_bytes()[:2] == b"\x1f\x8b"
    else:
        json.loads(trace.read_text())
    events = _events(trace)
    names = {e.get("name") for e in events if e.get("cat") == "user_annotation"}
    assert EXPECTED[opt] <= names
    steps = sorted(
        int(e["name"].split("#")[1])
        for e in events
        if str(e.get("name", "")).startswith("ProfilerStep#") and e.get("ph") == "X"
    )
    assert len(steps) == STEPS == result.window.active
    assert steps == list(result.window.steps)
    # The window holds both modes: ProfilerStep#N is training step N.
    assert {result.modes[n] for n in steps} == MODES[opt]
    assert result.complete, profile.format_table(result)


def test_fngd_window_spans_the_end_of_epoch_0_and_the_start_of_epoch_1(runs):
    result = runs["fngd"]
    modes = [result.modes[n] for n in result.window.steps]
    assert modes == ["inversion", "inversion", "weighted_sum", "weighted_sum"]
    inversion = result.summary.totals(result.modes, "inversion")
    summing = result.summary.totals(result.modes, "weighted_sum")
    assert {"fngd/gram", "fngd/solve"} <= set(inversion)
    assert not {"fngd/gram", "fngd/solve"} & set(summing)
    # In epoch 1 the weighted sum runs inside backward.
    step = next(s for s in result.summary.steps if result.modes[s.step] == "weighted_sum")
    assert ("fngd/weighted_sum", "backward") in step.phases


def test_kfac_window_holds_an_inverse_update_and_steps_without(runs):
    result = runs["kfac"]
    k = result.records[0]["hparams"]["inv_update_steps"]
    inverse = [n for n in result.window.steps if result.modes[n] == "inverse"]
    assert inverse and all(n % k == 0 for n in inverse)
    counts = {m: result.summary.totals(result.modes, m).get("kfac/inverse") for m in MODES["kfac"]}
    assert counts["inverse"].count == len(inverse)
    assert counts["no_inverse"] is None


@pytest.mark.parametrize("opt", ["fngd", "kfac"])
def test_tensorboard_profiler_plugin_loads_the_run(runs, out, opt):
    from torch_tb_profiler import io
    from torch_tb_profiler.profiler.data import RunProfileData
    from torch_tb_profiler.profiler.loader import RunLoader
    from torch_tb_profiler.profiler.run_generator import RunGenerator

    result = runs[opt]
    worker = f"{socket.gethostname()}_{os.getpid()}"
    # Parsed in this process first, so that an error fails the test with its traceback
    # (the loader's worker processes only log it).
    data = RunProfileData.parse(worker, 1, str(result.traces[0]), None)
    direct = RunGenerator(worker, 1, data).generate_run_profile()
    assert direct is not None

    run = RunLoader(f"{WORKLOAD}/{opt}", str(result.run_dir), io.Cache()).load()
    assert run.workers == [worker]
    assert run.get_spans() == ["1"]
    (loaded,) = run.get_profiles()
    assert loaded is not None and loaded.worker == worker
    assert {"overall", "operator", "trace"} <= {v.name for v in loaded.views}
    rows = loaded.overview["steps"]["rows"]
    assert [int(r[0]) for r in rows] == list(result.window.steps)


@pytest.mark.parametrize("opt", ["fngd", "kfac"])
def test_summary_records_have_positive_cpu_time_for_every_phase(runs, opt):
    result = runs[opt]
    assert result.records_path == result.run_dir / "profile.jsonl"
    records = read_jsonl(result.records_path)
    assert records and all(r["kind"] == "profile" for r in records)
    for r in records:
        for key in COMMON_FIELDS:
            assert key in r, key
        assert r["workload"] == WORKLOAD and r["optimizer"] == opt
        assert r["device"] == "cpu" and r["seed"] == 0
        assert r["data_source"] == "real" and r["batch_size"] == 64
        assert r["name"] in ("cpu_time", "count")  # no gpu_time on a CPU trace
        assert r["mode"] == result.modes[r["step"]]
    assert {r["step"] for r in records} == set(result.window.steps)
    cpu: dict[str, float] = {}
    count: dict[str, int] = {}
    for r in records:
        if r["phase"] is None:
            continue
        if r["name"] == "cpu_time":
            cpu[r["phase"]] = cpu.get(r["phase"], 0.0) + r["value"]
        else:
            count[r["phase"]] = count.get(r["phase"], 0) + r["value"]
    for name in EXPECTED[opt]:
        assert cpu.get(name, 0.0) > 0, name
        assert count.get(name, 0) > 0, name
    whole = [r for r in records if r["phase"] is None and r["name"] == "cpu_time"]
    assert sorted(r["step"] for r in whole) == list(result.window.steps)
    assert all(r["value"] > 0 for r in whole)
    table = profile.format_table(result)
    assert "fngd/solve" in table if opt == "fngd" else "kfac/inverse" in table


def test_main_takes_the_cli_arguments(tmp_path, capsys):
    args = {"workload": WORKLOAD, "optimizer": "sgd", "out": tmp_path, "device": "cpu",
            "steps": 2, "seed": 1}
    assert profile.main(**args) == 0
    run_dir = tmp_path / WORKLOAD / "sgd"
    assert len(trace_summary.trace_files(run_dir)) == 1
    records = read_jsonl(run_dir / "profile.jsonl")
    assert {r["step"] for r in records} == {3, 4}
    assert {r["seed"] for r in records} == {1}
    assert "update" in capsys.readouterr().out
    # A second profile replaces the first.
    assert profile.main(**args) == 0
    assert len(trace_summary.trace_files(run_dir)) == 1
    assert len(read_jsonl(run_dir / "profile.jsonl")) == len(records)


# -- pieces, without a run ------------------------------------------------------------------------


def _opt(name, **hparams):
    share = hparams.get("share")
    return SimpleNamespace(
        name=name, hparams=hparams, preconditioner=SimpleNamespace(share=share) if share else None
    )


def test_plan_window():
    w = profile.plan_window(_opt("fngd", share="sample"), steps_per_epoch=22, steps=10)
    assert (w.start, w.total) == (17, 27)  # 5 steps of epoch 0, 5 of epoch 1
    w = profile.plan_window(_opt("fngd", share="iteration"), steps_per_epoch=2, steps=10)
    assert (w.start, w.total) == (1, 11)  # at least the last step of epoch 0
    w = profile.plan_window(_opt("kfac", inv_update_steps=10), steps_per_epoch=5, steps=4)
    assert 10 in w.steps and 9 in w.steps and w.start >= profile.MIN_START
    w = profile.plan_window(_opt("kfac", inv_update_steps=100), steps_per_epoch=5, steps=10)
    assert 100 in w.steps and 99 in w.steps
    w = profile.plan_window(_opt("kfac", inv_update_steps=1), steps_per_epoch=5, steps=3)
    assert w.active == 3 and w.start >= profile.MIN_START
    for name in ("sgd", "adamw"):
        w = profile.plan_window(_opt(name), steps_per_epoch=5, steps=3)
        assert (w.start, w.active) == (profile.MIN_START, 3)
    w = profile.plan_window(_opt("ngd", share="none"), steps_per_epoch=5, steps=1)
    assert w.active == 1
    with pytest.raises(ValueError):
        profile.plan_window(_opt("fngd", share="sample"), steps_per_epoch=5, steps=1)


def _x(cat, name, ts, dur, pid=1, tid=1, **args):
    return {
        "ph": "X",
        "cat": cat,
        "name": name,
        "pid": pid,
        "tid": tid,
        "ts": ts,
        "dur": dur,
        "args": args,
    }


def test_gpu_time_follows_the_launch_correlation():
    """A CUDA-style trace: kernels are credited to the phase whose CPU range launched them,
    even when they run later; a kernel without its launch falls back to the GPU-side
    annotation; a nested phase has its parent."""
    ev = [
        _x("user_annotation", "ProfilerStep#7", 0, 100),
        _x("user_annotation", "forward", 10, 20),
        _x("user_annotation", "backward", 40, 40),
        _x("user_annotation", "fngd/weighted_sum", 50, 10, tid=2),  # autograd's thread
        _x("user_annotation", "aten::mm", 12, 2),  # not a phase
        _x("cuda_runtime", "cudaLaunchKernel", 12, 1, correlation=1),
        _x("cuda_runtime", "cudaLaunchKernel", 45, 1, correlation=2),
        _x("cuda_driver", "cuLaunchKernel", 55, 1, tid=2, correlation=3),
        # kernel 1 runs while the host is already in backward: still forward's
        _x("kernel", "gemm", 42, 5, pid=0, tid=7, correlation=1),
        _x("kernel", "relu_bwd", 48, 3, pid=0, tid=7, correlation=2),
        _x("kernel", "scale_gemm", 58, 4, pid=0, tid=7, correlation=3),
        # no launch in the trace: placed by the GPU-side spans
        _x("gpu_user_annotation", "ProfilerStep#7", 41, 60, pid=0, tid=7),
        _x("gpu_user_annotation", "backward", 47, 30, pid=0, tid=7),
        _x("kernel", "orphan", 70, 2, pid=0, tid=7, correlation=99),
        # outside every step
        _x("kernel", "late", 500, 8, pid=0, tid=7),
        _x("gpu_memcpy", "Memcpy HtoD", 60, 50, pid=0, tid=7, correlation=4),
    ]
    s = trace_summary.summarize({"traceEvents": ev})
    assert s.has_gpu and s.kernels == 5 and s.fallback_kernels == 1
    assert s.unattributed_gpu_time == pytest.approx(8e-6)
    (step,) = s.steps
    assert step.step == 7
    assert step.cpu_time == pytest.approx(100e-6)
    assert step.gpu_time == pytest.approx((5 + 3 + 4 + 2) * 1e-6)
    ph = step.phases
    assert set(ph) == {("forward", None), ("backward", None), ("fngd/weighted_sum", "backward")}
    assert ph[("forward", None)].gpu_time == pytest.approx(5e-6)
    assert ph[("backward", None)].gpu_time == pytest.approx((3 + 4 + 2) * 1e-6)
    assert ph[("fngd/weighted_sum", "backward")].gpu_time == pytest.approx(4e-6)
    assert ph[("fngd/weighted_sum", "backward")].cpu_time == pytest.approx(10e-6)
    assert ph[("forward", None)].count == 1

    records = profile.summary_records(s, {7: "weighted_sum"}, {7: 1})
    names = {(r["phase"], r["name"]) for r in records}
    assert (None, "gpu_time") in names and ("forward", "gpu_time") in names
    assert all(r["mode"] == "weighted_sum" and r["epoch"] == 1 for r in records)


def test_load_trace_reads_gzip_and_bare_arrays(tmp_path):
    import gzip

    ev = [_x("user_annotation", "ProfilerStep#0", 0, 10), _x("user_annotation", "data", 1, 2)]
    plain = tmp_path / "w_1.1.pt.trace.json"
    plain.write_text(json.dumps(ev))
    zipped = tmp_path / "w_1.2.pt.trace.json.gz"
    with gzip.open(zipped, "wt") as f:
        json.dump({"traceEvents": ev}, f)
    (tmp_path / "profile.jsonl").write_text("")
    assert {p.name for p in trace_summary.trace_files(tmp_path)} == {plain.name, zipped.name}
    for p in (plain, zipped):
        s = trace_summary.summarize_file(p)
        assert not s.has_gpu and s.step_numbers == [0]
        assert s.steps[0].phases[("data", None)].cpu_time == pytest.approx(2e-6)
    bad = tmp_path / "bad.pt.trace.json"
    bad.write_text("{}")
    with pytest.raises(ValueError):
        trace_summary.load_trace(bad)
