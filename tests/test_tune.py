"""Tuning studies: resume after an interruption, two processes on one study, the budget,
the best trial, and final runs from a study (``run --hparams-from``).

Trials are tiny: one epoch of mlp-digits (about 20 steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from bench import workloads
from bench.campaign.tune import (
    HIGHER_IS_BETTER,
    Best,
    TuneConfig,
    apply_best,
    best_trial,
    budget_full,
    load_best,
    open_storage,
    run_studies,
    study_name,
    tune,
)
from bench.cli import main
from bench.records import cell_file, read_records, record_files

WORKLOAD, LABEL = "mlp-digits", "sgd"


def _config(tmp_path: Path, trials: int, workers: int = 1) -> TuneConfig:
    return TuneConfig(
        workloads=[WORKLOAD],
        optimizers=[LABEL],
        trials=trials,
        epochs=1,
        out=tmp_path / "tune",
        device="cpu",
        workers=workers,
        warm_start=False,
    )


def _states(config: TuneConfig) -> list[TrialState]:
    study = optuna.load_study(
        study_name=study_name(WORKLOAD, LABEL), storage=open_storage(config.storage_url)
    )
    return [t.state for t in study.get_trials(deepcopy=False)]


class Interrupting:
    """A workload factory whose ``at``-th trial (1-based) raises ``KeyboardInterrupt`` (as
    Ctrl-C would) in its first training step. The factory's first call is the study's probe
    of the workload (its metric and validation split), not a trial."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, name: str, **kwargs: Any) -> workloads.Workload:
        w = workloads.get(name, **kwargs)
        self.calls += 1
        if self.calls == self.at + 1:

            def interrupt(*args: Any, **kw: Any) -> None:
                raise KeyboardInterrupt

            w.loss_fn = interrupt
        return w


def test_interrupted_study_resumes_to_exactly_the_budget(tmp_path: Path) -> None:
    config = _config(tmp_path, trials=4)
    tune_dir = config.out
    tune_dir.mkdir(parents=True)
    from bench.campaign.tune import prepare_studies

    prepare_studies(config)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_studies(config, log=lines.append, workload_factory=Interrupting(at=3))
    states = _states(config)
    assert states.count(TrialState.COMPLETE) == 2 and states[-1] == TrialState.FAIL
    # the interrupted trial's records say it never finished (and were not compacted)
    trial_files = record_files(tune_dir / "trials" / "mlp-digits__sgd")
    assert [p.suffix for p in trial_files] == [".parquet", ".parquet", ".jsonl"]

    best = tune(config, log=lines.append)  # the same command again
    states = _states(config)
    assert states.count(TrialState.COMPLETE) == 4
    assert len(states) == 5  # 2 + the failed one + 2 more: only what was missing
    assert len(lines) == 4 and "4/4 complete" in lines[-1]
    study = optuna.load_study(study_name="mlp-digits__sgd", storage=config.storage_url)
    assert study.user_attrs[HIGHER_IS_BETTER] is True  # accuracy: the workload's direction
    entry = best["studies"]["mlp-digits__sgd"]
    assert entry["complete_trials"] == 4 and set(entry["params"]) == {
        "lr",
        "weight_decay",
        "warmup_fraction",
    }
    records = read_records(
        cell_file(tune_dir / "trials" / "mlp-digits__sgd" / "mlp-digits__sgd__s0__t4")
    )
    evals = [r for r in records if r["kind"] == "eval"]
    assert {r["split"] for r in evals} == {"val"}
    assert {(r["study"], r["trial"], r["hparams_source"], r["preset"]) for r in records} == {
        ("mlp-digits__sgd", 4, "study mlp-digits__sgd trial 4", "tune")
    }
    assert records[-1]["name"] == "finished"

    trials = pd.read_csv(tune_dir / "trials.csv")  # the whole budget, failed trial included
    assert len(trials) == 5 and set(trials["study"]) == {"mlp-digits__sgd"}
    assert (trials["state"] == "COMPLETE").sum() == 4 and (trials["state"] == "FAIL").sum() == 1
    assert {"params_lr", "user_attrs_status", "value"} <= set(trials.columns)

    assert tune(config, log=lines.append)["studies"] == best["studies"]  # nothing more to do
    assert len(_states(config)) == 5


def _reachable(name: str, **kwargs: Any) -> workloads.Workload:
    """The registered workload with a target its first evaluation reaches."""
    w = workloads.get(name, **kwargs)
    w.target = 0.0
    return w


def test_a_trial_runs_the_studys_settings_and_stops_at_the_target(tmp_path: Path) -> None:
    config = TuneConfig(
        workloads=[WORKLOAD],
        optimizers=[LABEL],
        trials=1,
        epochs=3,
        max_steps_per_epoch=2,
        seed=3,
        out=tmp_path / "tune",
        device="cpu",
        warm_start=False,
    )
    tune(config, log=lambda line: None, workload_factory=_reachable)
    [path] = record_files(config.out / "trials" / "mlp-digits__sgd")
    records = read_records(path)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 1  # the target was reached in epoch 0: the trial stopped there
    first = epochs[0]
    assert (first["seed"], first["epochs"], first["max_steps_per_epoch"], first["steps"]) == (
        3, 3, 2, 2
    )
    assert (first["preset"], first["study"], first["trial"]) == ("tune", "mlp-digits__sgd", 0)
    study = optuna.load_study(study_name="mlp-digits__sgd", storage=config.storage_url)
    [trial] = study.get_trials(deepcopy=False)
    assert {k: first["hparams"][k] for k in trial.params} == pytest.approx(trial.params)
    assert math.isfinite(trial.value) and trial.user_attrs["reached"] is True
    assert {r["split"] for r in records if r["kind"] == "eval"} == {"val"}


def test_two_processes_share_one_study(tmp_path: Path) -> None:
    config = _config(tmp_path, trials=6, workers=2)
    tune(config)
    states = _states(config)
    assert states.count(TrialState.COMPLETE) == 6
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}  # pruned: budget full


def test_budget_counts_complete_and_earlier_running_trials(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    done = study.ask()
    study.tell(done, 1.0)
    running = study.ask()
    later = study.ask()
    assert not budget_full(study, running.number, 2)  # 1 complete before it
    assert budget_full(study, later.number, 2)  # 1 complete + 1 running before it
    assert not budget_full(study, later.number, 3)


def test_best_trial_is_fastest_then_best_metric(tmp_path: Path) -> None:
    study = optuna.create_study()
    for value, metric in [(math.inf, 0.9), (math.inf, 0.93), (2.0, 0.96), (1.5, 0.95)]:
        t = study.ask()
        t.set_user_attr("best_metric", metric)
        study.tell(t, value)
    assert best_trial(study).number == 3
    slow = optuna.create_study()
    for metric in (0.9, 0.93, 0.91):
        t = slow.ask()
        t.set_user_attr("best_metric", metric)
        slow.tell(t, math.inf)
    assert best_trial(slow).number == 1


@pytest.mark.parametrize(("higher", "best"), [(True, 1), (False, 2)])
def test_best_trial_without_a_reached_target_follows_the_studys_direction(higher, best) -> None:
    study = optuna.create_study()
    study.set_user_attr(HIGHER_IS_BETTER, higher)
    for metric in (0.5, 0.9, 0.1):  # none reached the target
        t = study.ask()
        t.set_user_attr("best_metric", metric)
        study.tell(t, math.inf)
    assert best_trial(study).number == best
    assert best_trial(study, higher_is_better=not higher).number == 3 - best


def test_load_best_reads_every_study_of_a_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = optuna.storages.RDBStorage(url)
    reached = optuna.create_study(study_name="mlp-digits__fngd", storage=storage)
    for key, value in {"workload": "mlp-digits", "optimizer": "fngd", "epochs": 3,
                       "max_steps_per_epoch": 5}.items():
        reached.set_user_attr(key, value)
    for value, lr in [(4.0, 0.1), (2.5, 0.2), (math.inf, 0.3)]:
        reached.enqueue_trial({"lr": lr})
        t = reached.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)})
        t.set_user_attr("best_metric", 0.9)
        reached.tell(t, value)
    failed = optuna.create_study(study_name="mlp-digits__sgd", storage=storage)
    failed.tell(failed.ask(), state=TrialState.FAIL)  # no complete trial: no best
    unreached = optuna.create_study(study_name="cnn-mnist1d__adamw", storage=storage)
    t = unreached.ask()
    t.set_user_attr("best_metric", 0.4)
    unreached.tell(t, math.inf)

    best = load_best(url)
    assert set(best) == {"mlp-digits__fngd", "cnn-mnist1d__adamw"}
    found = best["mlp-digits__fngd"]
    assert isinstance(found, Best)
    assert (found.study, found.workload, found.optimizer, found.trial) == (
        "mlp-digits__fngd", "mlp-digits", "fngd", 1
    )
    assert found.params == {"lr": 0.2}
    assert (found.value, found.reached, found.best_metric) == (2.5, True, 0.9)
    assert (found.epochs, found.max_steps_per_epoch, found.complete_trials) == (3, 5, 3)
    assert found.storage == url and found.source == "study mlp-digits__fngd trial 1"
    other = best["cnn-mnist1d__adamw"]  # names read off the study name without attributes
    assert (other.workload, other.optimizer, other.value, other.reached) == (
        "cnn-mnist1d", "adamw", None, False
    )
    assert (other.best_metric, other.epochs, other.complete_trials) == (0.4, None, 1)


def _best_file(tmp_path: Path) -> Path:
    path = tmp_path / "best_hparams.json"
    entry = {
        "study": "mlp-digits__sgd",
        "workload": WORKLOAD,
        "optimizer": LABEL,
        "trial": 7,
        "params": {"lr": 0.03, "weight_decay": 1e-4, "warmup_fraction": 0.1},
        "value": 1.2,
        "reached": True,
        "best_metric": 0.96,
        "epochs": 2,
        "complete_trials": 10,
    }
    path.write_text(
        json.dumps({"storage": "", "trials": 10, "studies": {"mlp-digits__sgd": entry}})
    )
    return path


def test_run_hparams_from_a_study(tmp_path: Path) -> None:
    best = _best_file(tmp_path)
    assert load_best(str(best))["mlp-digits__sgd"].source == "study mlp-digits__sgd trial 7"
    out = tmp_path / "final"
    argv = [
        "run",
        "--workload",
        WORKLOAD,
        "--optimizer",
        LABEL,
        "--seeds",
        "0",
        "1",
        "--hparams-from",
        str(best),
        "--out",
        str(out),
        "--no-report",
        "--no-overhead",
        "--no-progress",
        "--no-warm-start",
    ]
    assert main(argv) == 0
    for seed in (0, 1):
        records = read_records(cell_file(out / f"mlp-digits__sgd__s{seed}"))
        first = next(r for r in records if r["kind"] == "epoch")
        assert first["hparams_source"] == "study mlp-digits__sgd trial 7"
        assert first["study"] == "mlp-digits__sgd" and first["trial"] is None
        assert first["hparams"]["lr"] == 0.03 and first["hparams"]["warmup_fraction"] == 0.1
        assert first["epochs"] == 2  # the study's epoch budget
        assert {r["split"] for r in records if r["kind"] == "eval"} == {"test"}


def test_run_hparams_from_without_the_study_is_a_usage_error(tmp_path, capsys) -> None:
    best = _best_file(tmp_path)
    argv = [
        "run",
        "--workload",
        WORKLOAD,
        "--optimizer",
        "adamw",
        "--hparams-from",
        str(best),
        "--out",
        str(tmp_path / "x"),
        "--no-report",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fngd-bench: --hparams-from") and "mlp-digits__adamw" in err
    assert (
        main(
            [
                "tune",
                "--workload",
                "resnet18-cifar100",
                "--optimizer",
                "sgd",
                "--trials",
                "1",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "t"),
                "--device",
                "cpu",
                "--no-warm-start",
            ]
        )
        == 2
    )
    assert "no validation split" in capsys.readouterr().err


def _trial_records(path: Path, metrics: list[float], targets: list[float]) -> Path:
    """A trial's records as the runner writes them: one epoch, eval and target per value."""
    from bench.records import RecordWriter

    with RecordWriter(path) as writer:
        for epoch, value in enumerate(metrics):
            writer.write({"kind": "epoch", "epoch": epoch, "name": "train_loss", "value": 1.0,
                          "seconds": 2.0, "train_seconds": 2.0 * (epoch + 1)})
            writer.write({"kind": "eval", "epoch": epoch, "name": "accuracy", "value": value,
                          "seconds": 2.0 * (epoch + 1), "eval_seconds": 0.25})
        for epoch, seconds in enumerate(targets):
            writer.write({"kind": "target", "epoch": epoch, "name": "time_to_target",
                          "value": 0.9, "seconds": seconds})
    return path


@pytest.mark.parametrize(("higher", "best"), [(True, 0.9), (False, 0.5)])
def test_read_outcome_keeps_the_best_metric_in_the_workloads_direction(tmp_path, higher, best):
    from bench.campaign.tune import read_outcome

    path = _trial_records(tmp_path / "t.jsonl", [0.7, 0.5, 0.9, 0.6], [])
    outcome = read_outcome(path, "accuracy", higher, "finished")
    assert outcome.best_metric == best
    assert not outcome.reached and outcome.time_to_target == math.inf
    assert outcome.train_seconds == 8.0 and outcome.eval_seconds == 1.0


def test_read_outcome_takes_the_first_time_to_target(tmp_path):
    from bench.campaign.tune import read_outcome

    path = _trial_records(tmp_path / "t.jsonl", [0.95, 0.97], [4.0, 3.0])
    outcome = read_outcome(path, "accuracy", True, "finished")
    assert outcome.reached and outcome.time_to_target == 3.0 and outcome.best_metric == 0.97


def test_apply_best_gives_each_cell_its_study_and_lists_the_missing() -> None:
    from bench.cell import CellSpec

    found = Best(
        study="mlp-digits__sgd", workload="mlp-digits", optimizer="sgd", trial=4,
        params={"lr": 0.2}, value=1.0, reached=True, best_metric=0.9, epochs=3,
        complete_trials=5, max_steps_per_epoch=7,
    )
    cells = [
        CellSpec("cnn-mnist1d", "sgd", overrides={"momentum": 0.5}),  # no study: listed
        CellSpec("mlp-digits", "sgd", overrides={"momentum": 0.5}, epochs=9),
    ]
    assert apply_best(cells, {"mlp-digits__sgd": found}) == ["cnn-mnist1d__sgd"]
    missing, tuned = cells
    assert missing.overrides == {"momentum": 0.5} and missing.study is None
    assert tuned.overrides == {"momentum": 0.5, "lr": 0.2}
    assert (tuned.epochs, tuned.max_steps_per_epoch) == (3, 7)  # the study's budget
    assert tuned.study == "mlp-digits__sgd"
    assert tuned.hparams_source == "study mlp-digits__sgd trial 4"
    own = CellSpec("mlp-digits", "sgd", epochs=9)
    assert apply_best([own], {"mlp-digits__sgd": found}, study_epochs=False) == []
    assert (own.epochs, own.max_steps_per_epoch, own.overrides) == (9, None, {"lr": 0.2})
