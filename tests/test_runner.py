"""Runner and sweep on a tiny in-test workload: records, warm-up, divergence, OOM, resume."""

from __future__ import annotations

import collections
import itertools
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.campaign.sweep import cell_status, make_cells, run_sweep
from bench.cell import CellSpec, LoopState, run_cell, run_steps
from bench.cell.timing import StepTimer
from bench.measure.overhead import measure_cell_overhead
from bench.records import FIELDS, RecordWriter, read_dir, read_jsonl
from bench.workloads import Workload
from fngd import phases
from fngd.optimizers import build
from reports.load import load_records


class TinyLoader:
    """(inputs, targets, sample_ids) batches, reshuffled every epoch; ``hook(epoch, i)``
    runs before each batch (to inject failures)."""

    def __init__(self, x, y, batch_size, seed, hook=None):
        self.x, self.y, self.batch_size, self.hook = x, y, batch_size, hook
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = torch.randperm(
            len(self.x), generator=torch.Generator().manual_seed(1000 * self.seed + epoch)
        )
        for i in range(len(self)):
            if self.hook is not None:
                self.hook(epoch, i)
            ids = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[ids], self.y[ids], ids


class TinyWorkload:
    metric_name = "accuracy"
    higher_is_better = True
    data_source = "synthetic"
    data_note = "random points"
    epochs = 2

    def __init__(self, name, device, seed, batch_size=None, hook=None, scale=1.0, target=0.0):
        g = torch.Generator().manual_seed(seed)
        self.name = name
        self.x = torch.randn(48, 4, generator=g).to(device)
        self.y = torch.randint(0, 3, (48,), generator=g).to(device)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
        self.batch_size = batch_size or 16
        self.train_loader = TinyLoader(self.x, self.y, self.batch_size, seed, hook)
        self.scale = scale
        self.target = target
        self.hparams = {"sgd": {"lr": 0.05}}

    def forward(self, model, inputs):
        return model(inputs)

    def loss_fn(self, outputs, targets):
        return F.cross_entropy(outputs, targets) * self.scale

    reached = Workload.reached

    def eval_fn(self, model):
        out = model(self.x)
        return {
            "eval_loss": float(F.cross_entropy(out, self.y)),
            "accuracy": float((out.argmax(1) == self.y).float().mean()),
        }


def make_factory(interrupt_once=None):
    """Workload names: tiny, tiny-nan (loss NaN), tiny-oom, tiny-error (raise in step 2),
    tiny-late-target; ``interrupt_once`` (a workload name) raises KeyboardInterrupt in its
    second epoch, the first time only."""
    interrupted = []

    def factory(name, device, seed, batch_size=None, data_root=None, size="small"):
        hook = None
        if name == "tiny-oom":

            def hook(epoch, i):
                if i == 1:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")

        elif name == "tiny-error":

            def hook(epoch, i):
                if i == 1:
                    raise ValueError("bad batch")

        elif name == interrupt_once:

            def hook(epoch, i):
                if epoch == 1 and i == 1 and not interrupted:
                    interrupted.append(True)
                    raise KeyboardInterrupt

        scale = float("nan") if name == "tiny-nan" else 1.0
        target = 2.0 if name == "tiny-late-target" else 0.0  # 2.0: never reached
        return TinyWorkload(name, device, seed, batch_size, hook, scale, target)

    return factory


def _records(out):
    return read_dir(out)


def test_tiny_run_writes_every_kind_with_all_fields(tmp_path):
    spec = CellSpec("tiny", "sgd", seed=1, epochs=2, preset="test")
    with RecordWriter(tmp_path / "c.jsonl") as writer:
        status, message = run_cell(spec, writer, device="cpu", workload_factory=make_factory())
    assert (status, message) == ("finished", "")
    records = read_jsonl(tmp_path / "c.jsonl")
    kinds = collections.Counter(r["kind"] for r in records)
    assert kinds["step"] == 2 * 3  # 48 samples / 16 per batch, 2 epochs
    assert kinds["epoch"] == 2 and kinds["target"] == 1
    assert kinds["eval"] == 4  # eval_loss and accuracy per epoch
    assert kinds["memory"] >= 2 and kinds["cell"] == 1
    for r in records:
        assert set(FIELDS) <= set(r), set(FIELDS) - set(r)
        assert r["run_id"] == "tiny__sgd__s1"
        assert r["workload"] == "tiny" and r["optimizer"] == "sgd" and r["family"] == "sgd"
        assert r["impl"] == "torch" and r["hparams"]["lr"] == 0.05
        assert r["seed"] == 1 and r["device"] == "cpu" and r["device_name"]
        assert r["data_source"] == "synthetic" and r["batch_size"] == 16
        assert r["torch_version"] == torch.__version__ and r["git_commit"]
        assert r["attempt"] == 1 and r["preset"] == "test" and r["steps_per_epoch"] == 3
    steps = [r for r in records if r["kind"] == "step"]
    assert not any(r["kind"] == "phase" for r in records)  # a step holds its phases
    for r in steps:
        assert list(r["phases"]) == ["data", "forward", "backward", "update"]
        assert r["phase_count"] == 4
        assert r["seconds"] >= sum(r["phases"].values()) > 0
        assert r["step"] is not None and r["epoch"] in (0, 1)
        assert isinstance(r["warmup"], bool)
    assert [r["step"] for r in steps] == list(range(6))
    assert [r["warmup"] for r in steps] == [True] * 3 + [False] * 3
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert all(r["name"] == "train_loss" and r["value"] > 0 for r in epochs)
    evals = [r for r in records if r["kind"] == "eval"]
    assert {r["name"] for r in evals} == {"eval_loss", "accuracy"}
    assert evals[-1]["seconds"] == pytest.approx(sum(r["seconds"] for r in epochs))
    (target,) = [r for r in records if r["kind"] == "target"]
    assert target["name"] == "time_to_target" and target["epoch"] == 0
    memory = {r["name"]: r["value"] for r in records if r["kind"] == "memory"}
    assert memory["peak_rss"] > 0 and memory["optimizer_state"] > 0  # momentum buffers
    # what the process held once the cell was built, before training: below the peak
    assert 0 < memory["baseline_rss"] <= memory["peak_rss"]
    assert records[0]["kind"] == "cell" and records[0]["name"] == "started"


class SlowEvalWorkload(TinyWorkload):
    """Evaluation takes a known time (a quarter second per epoch), training little."""

    def eval_fn(self, model):
        time.sleep(0.25)
        return super().eval_fn(model)


def test_time_to_target_is_training_time_only(tmp_path):
    """The target's seconds are the training seconds up to the epoch that reached it:
    evaluation is excluded (the protocol), though it is recorded beside them."""

    def factory(name, device, seed, batch_size=None, data_root=None, size="small"):
        return SlowEvalWorkload(name, device, seed, batch_size, target=0.0)

    spec = CellSpec("tiny", "sgd", epochs=2)
    with RecordWriter(tmp_path / "c.jsonl") as writer:
        run_cell(spec, writer, device="cpu", workload_factory=factory)
    records = read_jsonl(tmp_path / "c.jsonl")
    (target,) = [r for r in records if r["kind"] == "target"]
    epochs = {r["epoch"]: r for r in records if r["kind"] == "epoch"}
    assert target["epoch"] == 0
    assert target["seconds"] == epochs[0]["train_seconds"] == epochs[0]["seconds"]
    assert target["eval_seconds"] >= 0.25


def test_stop_at_target_ends_the_cell_after_the_epoch_that_reaches_it(tmp_path):
    """Tuning trials stop at the target (target 0.0: reached in epoch 0); others run on."""
    for stop, epochs_run in ((True, 1), (False, 3)):
        path = tmp_path / f"c{stop}.jsonl"
        spec = CellSpec("tiny", "sgd", epochs=3, stop_at_target=stop)
        with RecordWriter(path) as writer:
            status, message = run_cell(spec, writer, device="cpu", workload_factory=make_factory())
        records = read_jsonl(path)
        assert status == "finished"
        assert message == ("stopped at the target in epoch 0" if stop else "")
        assert sum(r["kind"] == "epoch" for r in records) == epochs_run
        assert sum(r["kind"] == "target" for r in records) == 1
        assert any(r["kind"] == "memory" and r["name"] == "peak_rss" for r in records)


def test_max_steps_per_epoch_cuts_epochs(tmp_path):
    spec = CellSpec("tiny-late-target", "adamw", epochs=2, max_steps_per_epoch=2)
    with RecordWriter(tmp_path / "c.jsonl") as writer:
        run_cell(spec, writer, device="cpu", workload_factory=make_factory())
    records = read_jsonl(tmp_path / "c.jsonl")
    assert sum(r["kind"] == "step" for r in records) == 4
    assert all(r["max_steps_per_epoch"] == 2 and r["steps_per_epoch"] == 2 for r in records)
    assert not any(r["kind"] == "target" for r in records)


def test_fngd_cell_shows_both_phases_with_cut_epochs(tmp_path):
    """Cut epochs replay the first epoch's batches, so FNGD's second epoch is all
    weighted sums; its first weighted-sum step is marked warm-up. (The Python blocks: the
    compiled ones sum inside backward where no phase timer sees it.)"""
    spec = CellSpec(
        "tiny", "fngd", overrides={"native": "off"}, epochs=2, max_steps_per_epoch=2,
        warmup_steps=1,
    )
    with RecordWriter(tmp_path / "c.jsonl") as writer:
        status, _ = run_cell(spec, writer, device="cpu", workload_factory=make_factory())
    assert status == "finished"
    records = read_jsonl(tmp_path / "c.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["mode"] for r in steps] == ["inversion"] * 2 + ["weighted_sum"] * 2
    assert [r["warmup"] for r in steps] == [True, False, True, False]
    assert all(r["replay_first_epoch"] is True for r in records)
    assert records[0]["hparams"]["steps_per_epoch"] == 2
    keys = [set(r["phases"]) for r in steps]
    assert {"fngd/gram", "fngd/solve"} <= keys[0]
    assert "backward>fngd/weighted_sum" in keys[-1]  # inside backward (phase_key)
    assert not {"fngd/gram", "fngd/solve"} & keys[-1]
    memory = {r["name"] for r in records if r["kind"] == "memory"}
    assert "optimizer_state/coefficients" in memory


class ModeOptimizer:
    """SGD that reports mode ``a`` in epoch 0 and ``b`` afterwards (like FNGD)."""

    def __init__(self, model):
        self.inner = build("sgd", model)
        self.mode = None
        self.epoch = 0
        self.steps = 0

    def zero_grad(self, set_to_none=True):
        self.inner.zero_grad(set_to_none)

    def prepare(self, sample_ids=None):
        pass

    def reweight(self, sample_ids=None):
        return False

    def step(self, sample_ids=None):
        self.inner.step()
        self.mode = "a" if self.steps < 5 else "b"
        self.steps += 1


def test_warmup_marks_first_steps_and_first_step_of_a_new_mode():
    wl = make_factory()("tiny", device="cpu", seed=0, batch_size=8)  # 6 steps per epoch
    opt = ModeOptimizer(wl.model)
    timer = StepTimer("cpu")
    state = LoopState(warmup_steps=2)
    loss_sum = torch.zeros(())
    previous = phases.set_recorder(timer)
    try:
        for epoch in range(2):
            run_steps(
                wl,
                opt,
                iter(wl.train_loader),
                6,
                timer=timer,
                epoch=epoch,
                state=state,
                device=torch.device("cpu"),
                loss_sum=loss_sum,
            )
    finally:
        phases.set_recorder(previous)
    steps = [r for r in timer.flush() if r["kind"] == "step"]
    assert [r["mode"] for r in steps] == ["a"] * 5 + ["b"] * 7
    warm = [r["step"] for r in steps if r["warmup"]]
    assert warm == [0, 1, 5]


def test_nan_oom_and_error_cells_are_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    cells = make_cells(["tiny-nan", "tiny-oom", "tiny-error", "tiny"], ["sgd"], [0], epochs=2)
    result = run_sweep(cells, tmp_path, device="cpu", workload_factory=make_factory())
    assert result.statuses == {
        "tiny-nan__sgd__s0": "diverged",
        "tiny-oom__sgd__s0": "oom",
        "tiny-error__sgd__s0": "error",
        "tiny__sgd__s0": "finished",
    }
    records = _records(tmp_path)
    cell = {(r["run_id"], r["name"]): r for r in records if r["kind"] == "cell"}
    assert "non-finite train loss" in cell[("tiny-nan__sgd__s0", "diverged")]["value"]
    assert "OutOfMemoryError" in cell[("tiny-oom__sgd__s0", "oom")]["value"]
    error = cell[("tiny-error__sgd__s0", "error")]
    assert "ValueError: bad batch" in error["value"] and "Traceback" in error["traceback"]
    # the diverged cell stopped after its first epoch
    nan_epochs = [r for r in records if r["run_id"] == "tiny-nan__sgd__s0" and r["kind"] == "epoch"]
    assert len(nan_epochs) == 1 and nan_epochs[0]["value"] is None
    for run_id in result.statuses:
        assert (run_id, "started") in cell, run_id
    assert "Traceback" not in capsys.readouterr().err


def test_interrupted_sweep_resumes_with_every_cell_once(tmp_path):
    factory = make_factory(interrupt_once="tiny-late-target")
    cells = make_cells(["tiny", "tiny-late-target", "tiny-nan"], ["sgd", "adamw"], [0], epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cells, tmp_path, device="cpu", workload_factory=factory)
    # the first two cells are complete (compacted to Parquet); the third was cut in its
    # second epoch and keeps its JSON Lines
    assert cell_status(tmp_path / "tiny__sgd__s0.jsonl") == "finished"
    assert (tmp_path / "tiny__sgd__s0.parquet").exists()
    assert not (tmp_path / "tiny__sgd__s0.jsonl").exists()
    cut = tmp_path / "tiny-late-target__sgd__s0.jsonl"
    assert cell_status(cut) == "started"
    assert not cut.with_suffix(".parquet").exists()
    assert any(r["kind"] == "epoch" for r in read_jsonl(cut))  # epoch 0 was flushed
    assert not (tmp_path / "tiny-late-target__adamw__s0.jsonl").exists()
    # the report reads the cut cell's flushed epoch beside the compacted cells
    frame, problems = load_records([tmp_path])
    assert not problems
    cut_epochs = frame.loc[(frame["run_id"] == cut.stem) & (frame["kind"] == "epoch")]
    assert len(cut_epochs) == 1

    result = run_sweep(cells, tmp_path, device="cpu", workload_factory=factory, resume=True)
    assert sorted(result.skipped) == ["tiny__adamw__s0", "tiny__sgd__s0"]
    assert result.statuses["tiny-late-target__sgd__s0"] == "finished"
    assert (tmp_path / "tiny-late-target__sgd__s0.attempt1.partial").exists()
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == []  # every cell closed

    records = _records(tmp_path)
    done = collections.Counter(
        r["run_id"] for r in records if r["kind"] == "cell" and r["name"] != "started"
    )
    assert done == {spec.run_id: 1 for spec in cells}
    epochs = collections.Counter(r["run_id"] for r in records if r["kind"] == "epoch")
    assert epochs["tiny-late-target__sgd__s0"] == 2 and epochs["tiny__sgd__s0"] == 2
    attempts = {r["run_id"]: r["attempt"] for r in records}
    assert attempts["tiny-late-target__sgd__s0"] == 2 and attempts["tiny__sgd__s0"] == 1
    _report_counts_each_cell_once(tmp_path, [spec.run_id for spec in cells])

    # resuming a complete sweep runs nothing; without --resume every file is replaced
    again = run_sweep(cells, tmp_path, device="cpu", workload_factory=factory, resume=True)
    assert again.statuses == {} and len(again.skipped) == len(cells)
    run_sweep(cells[:1], tmp_path, device="cpu", workload_factory=factory)
    assert (tmp_path / "tiny__sgd__s0.attempt1.replaced").exists()
    records = _records(tmp_path)
    assert sum(r["kind"] == "cell" and r["name"] == "finished" for r in records) == 4
    assert {r["attempt"] for r in records if r["run_id"] == "tiny__sgd__s0"} == {2}


def test_a_resumed_sweep_reports_what_an_uninterrupted_one_does(tmp_path):
    """Interrupted (the cut cell's JSON Lines set aside) and resumed, a sweep gives the
    report the same losses, metrics, steps, modes and phases as one run straight through
    (seeded cells; only the timings are new measurements)."""
    cells = make_cells(["tiny", "tiny-late-target"], ["sgd", "fngd"], [0], epochs=3)
    run_sweep(cells, tmp_path / "straight", device="cpu", workload_factory=make_factory())
    factory = make_factory(interrupt_once="tiny-late-target")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cells, tmp_path / "resumed", device="cpu", workload_factory=factory)
    run_sweep(cells, tmp_path / "resumed", device="cpu", workload_factory=factory, resume=True)

    def figures(out):
        frame, problems = load_records([out])
        assert not problems
        values = frame.loc[frame["kind"].isin(["epoch", "eval", "target"])]
        values = values[["run_id", "kind", "epoch", "name", "value"]].sort_values(
            ["run_id", "kind", "epoch", "name"]
        )
        steps = frame.loc[frame["kind"] == "step"]
        phases = [c for c in steps.columns if c.startswith("phase:")]
        shape = steps.assign(keys=steps[phases].notna().apply(tuple, axis=1))
        shape = shape.groupby(["run_id", "epoch", "mode", "warmup", "keys"], dropna=False).size()
        return values.reset_index(drop=True), shape

    values, shape = figures(tmp_path / "straight")
    resumed_values, resumed_shape = figures(tmp_path / "resumed")
    assert len(values) > 20 and values.equals(resumed_values)
    assert shape.equals(resumed_shape)


def _report_counts_each_cell_once(out, run_ids):
    """The report's own reader sees one closing cell record per cell."""
    frame, problems = load_records([out])
    assert not problems
    cells = frame[(frame["kind"] == "cell") & (frame["name"] != "started")]
    assert sorted(cells["run_id"]) == sorted(run_ids)
    epochs = frame[frame["kind"] == "epoch"].groupby("run_id").size()
    assert epochs["tiny-late-target__sgd__s0"] == 2


def test_overhead_record(tmp_path):
    spec = CellSpec("tiny", "sgd")
    with RecordWriter(tmp_path / "o.jsonl") as writer:
        record = measure_cell_overhead(
            spec, writer, device="cpu", workload_factory=make_factory(), steps=3, pairs=2
        )
    (r,) = read_jsonl(tmp_path / "o.jsonl")
    assert r["kind"] == "overhead" and r["name"] == "runner_overhead"
    assert r["value"] == pytest.approx(record["value"])
    assert r["phases_per_step"] == 4  # data, forward, backward, update
    assert 0 <= r["estimate"] < 0.5 and r["plain_step_seconds"] > 0
    assert r["workload"] == "tiny" and r["optimizer"] == "sgd" and r["impl"] == "torch"


class ReadCostClock:
    """A ``time.perf_counter`` stand-in on which every read costs ``tick`` seconds and
    nothing else passes unless ``advance`` says so: timing is exact and free of noise."""

    def __init__(self, tick: float) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        now = self.now
        self.now += self.tick
        return now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ClockedWorkload(TinyWorkload):
    """TinyWorkload whose forward pass takes ``work`` seconds of ``clock``."""

    def __init__(self, clock: ReadCostClock, work: float, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock, self.work = clock, work

    def forward(self, model, inputs):
        self.clock.advance(self.work)
        return model(inputs)


def test_overhead_is_the_timed_loops_extra_cost_on_a_known_clock(tmp_path, monkeypatch):
    """On a clock where a step's work takes ``WORK`` and each clock read ``TICK``, the runner's
    loop costs exactly its timer's reads more than the plain loop: one at each step's start
    and end and at each phase's begin and end. The overhead figure must be that extra cost
    over the plain step (positive: a swapped or constant figure is not), agree with the
    recorder's cost measured in isolation, and be what the record says."""
    tick, work, steps = 2.0**-17, 2.0**-10, 3  # binary fractions: sums are exact
    clock = ReadCostClock(tick)
    monkeypatch.setattr(time, "perf_counter", clock)

    def factory(name, device, seed, batch_size=None, data_root=None, size="small"):
        return ClockedWorkload(clock, work, name, device, seed, batch_size)

    spec = CellSpec("tiny", "sgd")
    with RecordWriter(tmp_path / "o.jsonl") as writer:
        record = measure_cell_overhead(
            spec, writer, device="cpu", workload_factory=factory, steps=steps, pairs=4
        )
    (written,) = read_jsonl(tmp_path / "o.jsonl")

    assert record["phases_per_step"] == 4  # data, forward, backward, update
    reads_per_step = 2 + 2 * record["phases_per_step"]
    plain = work + tick / steps  # a block's closing read is inside its time
    extra = reads_per_step * tick
    assert record["value"] > 0
    assert record["value"] == pytest.approx(extra / plain, rel=1e-9)
    assert record["plain_step_seconds"] == pytest.approx(plain, rel=1e-9)
    assert record["timed_step_seconds"] == pytest.approx(plain + extra, rel=1e-9)
    assert record["median_ratio"] == pytest.approx(extra / plain, rel=1e-9)
    assert record["estimate"] == pytest.approx(record["value"], rel=1e-3)
    assert record["pairs"] == 4 and record["steps"] == steps
    assert written["kind"] == "overhead" and written["name"] == "runner_overhead"
    for key in ("value", "median_ratio", "estimate", "plain_step_seconds", "timed_step_seconds"):
        assert written[key] == record[key], key


class TimedWorkload(ClockedWorkload):
    """ClockedWorkload whose evaluation takes ``evaluation`` seconds of the clock and whose
    target is reached from its ``reach_at``-th evaluation on (1-based; 0: never)."""

    def __init__(self, clock, work, evaluation, reach_at, *args, **kwargs) -> None:
        super().__init__(clock, work, *args, **kwargs)
        self.evaluation, self.reach_at, self.evals = evaluation, reach_at, 0
        self.target = 0.5

    def eval_fn(self, model):
        self.clock.advance(self.evaluation)
        self.evals += 1
        result = super().eval_fn(model)
        result["accuracy"] = 1.0 if self.reach_at and self.evals >= self.reach_at else 0.0
        return result


def _timed_cell(tmp_path, monkeypatch, reach_at, stop_at_target=False, epochs=3):
    tick, work, evaluation = 2.0**-17, 2.0**-6, 2.0**-2  # binary fractions: sums are exact
    clock = ReadCostClock(tick)
    monkeypatch.setattr(time, "perf_counter", clock)

    def factory(name, device, seed, batch_size=None, data_root=None, size="small"):
        return TimedWorkload(clock, work, evaluation, reach_at, name, device, seed, batch_size)

    spec = CellSpec(
        "tiny", "sgd", epochs=epochs, overrides={"lr": 0.0}, stop_at_target=stop_at_target
    )
    outer = StepTimer(torch.device("cpu"))  # a caller's own recorder: restored afterwards
    previous = phases.set_recorder(outer)
    try:
        with RecordWriter(tmp_path / "c.jsonl") as writer:
            status, _ = run_cell(spec, writer, device="cpu", workload_factory=factory)
        assert status == "finished" and phases.get_recorder() is outer
    finally:
        phases.set_recorder(previous)
    return read_jsonl(tmp_path / "c.jsonl"), work, evaluation


def test_epoch_eval_and_target_times_on_a_known_clock(tmp_path, monkeypatch):
    """Each epoch's seconds are its 3 steps' work (plus clock reads, far below one step),
    evaluation is timed apart, the training total runs on, and the target (reached at the
    second evaluation) says the training time to it and every evaluation's time before it."""
    records, work, evaluation = _timed_cell(tmp_path, monkeypatch, reach_at=2)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and all(r["steps"] == 3 for r in epochs)
    for r in epochs:
        assert 3 * work <= r["seconds"] < 3 * work + 0.1 * work
    assert [r["train_seconds"] for r in epochs] == pytest.approx(
        list(itertools.accumulate(r["seconds"] for r in epochs))
    )
    evals = [r for r in records if r["kind"] == "eval" and r["name"] == "accuracy"]
    assert [(r["epoch"], r["value"]) for r in evals] == [(0, 0.0), (1, 1.0), (2, 1.0)]
    for r, e in zip(evals, epochs, strict=True):
        assert evaluation <= r["eval_seconds"] < evaluation + 0.1 * work
        assert r["seconds"] == e["train_seconds"]
    (target,) = [r for r in records if r["kind"] == "target"]
    assert (target["epoch"], target["value"], target["metric"]) == (1, 0.5, "accuracy")
    assert target["metric_value"] == 1.0 and target["seconds"] == epochs[1]["train_seconds"]
    before_target = evals[0]["eval_seconds"] + evals[1]["eval_seconds"]
    assert target["eval_seconds"] == pytest.approx(before_target)
    after = [r for r in records if r["kind"] == "memory" and not r["name"].startswith("baseline")]
    assert after and all(r["epoch"] == 2 for r in after)  # after the last epoch run


def test_train_loss_is_the_epochs_mean_batch_loss(tmp_path, monkeypatch):
    """With lr 0 the model stays put, so the mean of the epoch's three equal-size batch losses
    is the loss over all 48 samples: the evaluation's."""
    records, _, _ = _timed_cell(tmp_path, monkeypatch, reach_at=0, epochs=2)
    epochs = [r for r in records if r["kind"] == "epoch"]
    losses = [r for r in records if r["kind"] == "eval" and r["name"] == "eval_loss"]
    for e, ev in zip(epochs, losses, strict=True):
        assert e["name"] == "train_loss" and e["value"] == pytest.approx(ev["value"], rel=1e-6)


def test_a_target_never_reached_writes_no_target_and_does_not_stop(tmp_path, monkeypatch):
    records, _, _ = _timed_cell(tmp_path, monkeypatch, reach_at=0, stop_at_target=True)
    assert not any(r["kind"] == "target" for r in records)
    assert sum(r["kind"] == "epoch" for r in records) == 3
