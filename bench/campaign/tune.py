"""Equal-budget tuning studies on Optuna: ``fngd-bench tune``.

One study per (workload, optimiser label), named ``<workload>__<label>``
(:func:`study_name`), in one Optuna storage (SQLite under ``--out`` by default; any storage
URL Optuna accepts, so that workers on several machines can share a database server).

Protocol
--------
- **Budget**: every study runs until it holds ``trials`` COMPLETE trials, the same number
  for every optimiser. Trials draw their hyperparameters (``bench.campaign.search_spaces``) from a
  seeded scrambled Sobol sequence (``optuna.samplers.QMCSampler``; Optuna learns the space
  from the first trial, which its seeded random sampler draws).
  ``OUT/trials.csv`` lists every trial of every study (its hyperparameters and outcome).
- **Objective**: training time (evaluation excluded) until the workload's metric on its
  *validation* split (held out from the training data; the test split stays for the final
  runs) reaches the workload's target, within ``epochs`` epochs, with seed ``seed``. A trial
  that does not reach it scores ``+inf`` (AlgoPerf's convention: a failure, whatever its
  cause), and the best trial among several that did not reach it is the one with the best
  validation metric (``best_metric``); Optuna stores the infinity as such, and the
  quasi-random sampler never reads objective values.
- **Outcomes**: every trial records ``status`` (``finished``, ``diverged``, ``oom`` or
  ``error``: the cell's status), ``reached``, ``best_metric``, ``train_seconds``,
  ``eval_seconds`` and ``records`` (its records file) as user attributes. Diverged, oom and
  error trials are complete trials that did not reach the target: they use up budget like
  any other, and never stop the study.
- **Records**: each trial is an ordinary cell (``bench.cell.runner``) whose records go to
  ``OUT/trials/<study>/<run_id>.parquet`` (``.jsonl`` while it runs) with ``study``,
  ``trial`` and ``hparams_source`` (``study <name> trial <n>``), ``preset`` ``tune`` and
  ``split`` ``val`` on its evaluations.

Resume and parallel workers
---------------------------
Ctrl-C marks the running trial FAIL (Optuna's own handling), which is never counted; the
same command later runs only what is missing. Several processes (``--workers``, or several
commands on one storage) coordinate through the storage alone: a trial starts only while
fewer than ``trials`` trials are COMPLETE or RUNNING with a smaller number
(:func:`budget_full`); otherwise it is pruned unrun (``status`` ``skipped``) and the worker
stops. Each process stops once the study is full. A process killed without a chance to
clean up leaves a RUNNING trial that the storage's heartbeat marks FAIL after
``GRACE_SECONDS``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from bench.campaign.search_spaces import suggest
from bench.campaign.sweep import freeze_heap, run_one
from bench.campaign.warm_start import warm_up
from bench.cell import CellSpec, WorkloadFactory, build_cell
from bench.cell.spec import file_safe
from bench.host.env import cpu_threads, resolve_device
from bench.host.progress import Progress
from bench.labels import resolve_label
from bench.records import cell_file, iter_records

__all__ = [
    "BEST_FILE",
    "Best",
    "TuneConfig",
    "apply_best",
    "best_trial",
    "budget_full",
    "default_storage",
    "export_best",
    "load_best",
    "run_studies",
    "study_name",
    "tune",
]

#: The file ``tune`` writes under ``--out``: the best trial of every study.
BEST_FILE = "best_hparams.json"
TRIALS_FILE = "trials.csv"
#: A RUNNING trial whose process sent no heartbeat for this long is marked FAIL.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
PRESET = "tune"

Log = Callable[[str], None]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_name(workload: str, label: str) -> str:
    return f"{workload}__{label}"


def default_storage(out: str | os.PathLike[str]) -> str:
    return f"sqlite:///{(Path(out) / 'studies.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``, with heartbeats for SQL databases (stale trials fail)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in url:
        raise ValueError(f"not a storage URL: {url!r} (e.g. sqlite:///studies.db)")
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}  # several writers wait for each other
    with warnings.catch_warnings():  # heartbeats: "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
        )


def sampler(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # "experimental" since Optuna 3.0
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
        )


@dataclass
class TuneConfig:
    """What ``fngd-bench tune`` runs (one study per workload x optimiser label)."""

    workloads: Sequence[str]
    optimizers: Sequence[str]
    trials: int
    epochs: int
    out: Path
    max_steps_per_epoch: int | None = None  # None: whole epochs
    storage: str | None = None  # None: default_storage(out)
    seed: int = 0
    workers: int = 1
    size: str = "small"
    device: str = "auto"
    data_root: str | None = None
    threads: int = 1
    warm_start: bool = True

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.out)

    def studies(self) -> list[tuple[str, str]]:
        return [
            (w, o) for w in dict.fromkeys(self.workloads) for o in dict.fromkeys(self.optimizers)
        ]


# -- the budget ----------------------------------------------------------------------------------


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def budget_full(study: optuna.Study, number: int, trials: int) -> bool:
    """Whether trial ``number`` would exceed the budget: ``trials`` trials are already
    COMPLETE, or COMPLETE and RUNNING with a smaller number (started before it)."""
    taken = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    count = sum(t.state == TrialState.COMPLETE or t.number < number for t in taken)
    return count >= trials


#: The study attribute that holds its workload's metric direction (``run_studies`` sets it).
HIGHER_IS_BETTER = "higher_is_better"


def best_trial(study: optuna.Study, higher_is_better: bool | None = None) -> FrozenTrial | None:
    """The fastest COMPLETE trial to the target; among trials that did not reach it (all
    ``+inf``), the one with the best validation metric, in the workload's direction (the
    study's own, unless given; higher is better where a study predates it); ties: the
    earlier trial."""
    if higher_is_better is None:
        higher_is_better = bool(study.user_attrs.get(HIGHER_IS_BETTER, True))
    sign = -1.0 if higher_is_better else 1.0

    def key(t: FrozenTrial) -> tuple[float, float, int]:
        metric = t.user_attrs.get("best_metric")
        return (
            t.value if t.value is not None else math.inf,
            sign * metric if metric is not None else math.inf,
            t.number,
        )

    done = complete_trials(study)
    return min(done, key=key) if done else None


# -- one trial -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a trial's records say."""

    status: str
    reached: bool
    time_to_target: float
    best_metric: float | None
    train_seconds: float
    eval_seconds: float


def read_outcome(path: Path, metric: str, higher_is_better: bool, status: str) -> Outcome:
    """What the records file ``path`` (a cell's, either suffix) says."""
    target, best, train, evals = math.inf, None, 0.0, 0.0
    found = cell_file(path)
    kinds = ("target", "eval", "epoch")
    records = () if found is None else iter_records(found, lambda *a: None, kinds=kinds)
    for r in records:
        kind = r.get("kind")
        if kind == "target" and r.get("seconds") is not None:
            target = min(target, float(r["seconds"]))
        elif kind == "eval" and r.get("name") == metric and r.get("value") is not None:
            value = float(r["value"])
            better = best is None or (value > best if higher_is_better else value < best)
            best = value if better else best
            evals += float(r.get("eval_seconds") or 0.0)
        elif kind == "epoch" and r.get("train_seconds") is not None:
            train = float(r["train_seconds"])
    return Outcome(status, math.isfinite(target), target, best, train, evals)


class Objective:
    """Train one cell with the trial's hyperparameters; its time to the validation target."""

    def __init__(
        self,
        config: TuneConfig,
        workload: str,
        label: str,
        *,
        metric: str,
        higher_is_better: bool,
        progress: Progress,
        workload_factory: WorkloadFactory | None = None,
    ) -> None:
        self.config = config
        self.workload = workload
        self.label = label
        self.name = study_name(workload, label)
        self.metric = metric
        self.higher_is_better = higher_is_better
        self.progress = progress
        self.workload_factory = workload_factory
        self.dir = config.out / "trials" / file_safe(self.name)

    def __call__(self, trial: optuna.Trial) -> float:
        study = trial.study
        if budget_full(study, trial.number, self.config.trials):
            trial.set_user_attr("status", "skipped")
            study.stop()
            raise optuna.TrialPruned("the budget is full")
        params = suggest(trial, resolve_label(self.label).family)
        spec = CellSpec(
            workload=self.workload,
            optimizer=self.label,
            seed=self.config.seed,
            overrides=params,
            epochs=self.config.epochs,
            max_steps_per_epoch=self.config.max_steps_per_epoch,
            size=self.config.size,
            preset=PRESET,
            eval_split="val",
            study=self.name,
            trial=trial.number,
            hparams_source=f"study {self.name} trial {trial.number}",
            stop_at_target=True,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        status = run_one(
            spec,
            self.dir,
            device=resolve_device(self.config.device),
            data_root=self.config.data_root,
            workload_factory=self.workload_factory,
            resume=False,
            progress=self.progress,
        )
        path = cell_file(self.dir / spec.run_id) or self.dir / f"{spec.run_id}.jsonl"
        outcome = read_outcome(path, self.metric, self.higher_is_better, status)
        for key, value in asdict(outcome).items():
            if key != "time_to_target":
                trial.set_user_attr(key, value)
        trial.set_user_attr("records", str(path.relative_to(self.config.out)))
        return outcome.time_to_target


# -- progress ------------------------------------------------------------------------------------


class TrialLines:
    """One line per finished trial: done / asked, best so far, time left in the study."""

    def __init__(self, config: TuneConfig, name: str, metric: str, log: Log, tag: str = ""):
        self.config, self.name, self.metric, self.log, self.tag = config, name, metric, log, tag

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        done = complete_trials(study)
        if len(done) >= self.config.trials:
            study.stop()
        if trial.user_attrs.get("status") == "skipped":
            return
        attrs = trial.user_attrs
        status = attrs.get("status", trial.state.name.lower())
        if trial.value is not None and math.isfinite(trial.value):
            result = f"{trial.value:.2f} s to target"
        else:
            result = "target not reached"
        if attrs.get("best_metric") is not None:
            result += f" (best val {self.metric} {attrs['best_metric']:.4g})"
        best = best_trial(study)
        best_text = "none yet"
        if best is not None and best.value is not None:
            best_text = (
                f"{best.value:.2f} s (trial {best.number})"
                if math.isfinite(best.value)
                else f"none reached the target (best trial {best.number})"
            )
        self.log(
            f"{self.tag}{self.name} trial {trial.number}: {status}, {result} | "
            f"{min(len(done), self.config.trials)}/{self.config.trials} complete, "
            f"best {best_text}, {self._left(done)} left"
        )

    def _left(self, done: list[FrozenTrial]) -> str:
        durations = [
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in done
            if t.datetime_complete is not None and t.datetime_start is not None
        ]
        remaining = max(self.config.trials - len(done), 0)
        if not durations:
            return "?"
        seconds = sum(durations) / len(durations) * remaining / max(self.config.workers, 1)
        return f"~{seconds / 60:.1f} min" if seconds >= 90 else f"~{seconds:.0f} s"


# -- studies -------------------------------------------------------------------------------------



def prepare_studies(config: TuneConfig) -> list[str]:
    """Create (or check) every study of ``config``; returns their names. A study run before
    with another epoch budget, step cut, seed or size raises ``ValueError``: its trials would not be
    comparable with new ones."""
    storage = open_storage(config.storage_url)
    names = []
    for workload, label in config.studies():
        name = study_name(workload, label)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler(config.seed),
            direction="minimize",
            load_if_exists=True,
        )
        asked = {
            "workload": workload,
            "optimizer": label,
            "epochs": config.epochs,
            "max_steps_per_epoch": config.max_steps_per_epoch,
            "seed": config.seed,
            "size": config.size,
        }
        held = study.user_attrs
        differ = [
            f"{k} {held[k]!r} (now {v!r})" for k, v in asked.items() if k in held and held[k] != v
        ]
        if differ:
            raise ValueError(
                f"study {name} in {config.storage_url} was run with {', '.join(differ)}; "
                "use the same options or another --storage"
            )
        for key, value in asked.items():
            if key not in held:
                study.set_user_attr(key, value)
        names.append(name)
    return names


def run_studies(
    config: TuneConfig,
    *,
    log: Log | None = None,
    progress: Progress | None = None,
    workload_factory: WorkloadFactory | None = None,
    tag: str = "",
) -> None:
    """One worker: each study of ``config`` in turn, until it holds ``config.trials``
    complete trials (what this worker and any other on the storage ran together)."""
    log = log or _stderr
    shown = progress or Progress("off")
    storage = open_storage(config.storage_url)
    warmed = not config.warm_start
    freeze_heap()
    with cpu_threads(config.threads, config.device):
        for workload, label in config.studies():
            name = study_name(workload, label)
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler(config.seed)
            )
            remaining = config.trials - len(complete_trials(study))
            if remaining <= 0:
                log(f"{tag}{name}: {config.trials}/{config.trials} complete")
                continue
            probe = _probe(workload, label, config, workload_factory)
            study.set_user_attr(HIGHER_IS_BETTER, probe[1])
            if not warmed:
                warm_up(
                    CellSpec(workload, label, seed=config.seed, size=config.size),
                    device=config.device,
                    data_root=config.data_root,
                    workload_factory=workload_factory,
                )
                warmed = True
            objective = Objective(
                config,
                workload,
                label,
                metric=probe[0],
                higher_is_better=probe[1],
                progress=shown,
                workload_factory=workload_factory,
            )
            study.optimize(
                objective,
                n_trials=remaining,
                callbacks=[TrialLines(config, name, probe[0], log, tag)],
                gc_after_trial=True,
            )


def _probe(
    workload: str, label: str, config: TuneConfig, factory: WorkloadFactory | None
) -> tuple[str, bool]:
    """The workload's metric and direction; fails early if it has no validation split."""
    from bench.workloads.workload import eval_function

    cell = build_cell(
        CellSpec(workload, label, seed=config.seed, size=config.size, epochs=1),
        resolve_device(config.device),
        data_root=config.data_root,
        workload_factory=factory,
    )
    eval_function(cell.workload, "val")
    return cell.workload.metric_name, cell.workload.higher_is_better


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _worker(config: TuneConfig, index: int) -> None:
    try:
        run_studies(config, tag=f"[worker {index}] ")
    except KeyboardInterrupt:
        sys.exit(130)


def tune(
    config: TuneConfig,
    *,
    log: Log | None = None,
    progress: Progress | None = None,
    workload_factory: WorkloadFactory | None = None,
) -> dict[str, Any]:
    """Run every study of ``config`` to its budget (``config.workers`` processes), then
    write ``OUT/best_hparams.json``; returns what it wrote."""
    config.out.mkdir(parents=True, exist_ok=True)
    prepare_studies(config)
    if config.workers <= 1:
        run_studies(config, log=log, progress=progress, workload_factory=workload_factory)
    else:
        context = multiprocessing.get_context("spawn")
        procs = [
            context.Process(target=_worker, args=(config, i), name=f"tune-worker-{i}")
            for i in range(config.workers)
        ]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:
                p.join()
            raise
        failed = [p.name for p in procs if p.exitcode not in (0, None)]
        if failed:
            raise RuntimeError(f"tuning workers failed: {', '.join(failed)}")
    export_trials(config, config.out / TRIALS_FILE)
    return export_best(config, config.out / BEST_FILE)


# -- results -------------------------------------------------------------------------------------


@dataclass
class Best:
    """The best trial of one study: what ``run --hparams-from`` applies."""

    study: str
    workload: str
    optimizer: str
    trial: int
    params: dict[str, Any]
    value: float | None
    reached: bool
    best_metric: float | None
    epochs: int | None
    complete_trials: int
    storage: str = ""
    max_steps_per_epoch: int | None = None

    @property
    def source(self) -> str:
        return f"study {self.study} trial {self.trial}"


def study_best(study: optuna.Study, storage: str) -> Best | None:
    attrs = study.user_attrs
    best = best_trial(study)
    if best is None:
        return None
    value = best.value if best.value is not None and math.isfinite(best.value) else None
    return Best(
        study=study.study_name,
        workload=attrs.get("workload", study.study_name.split("__")[0]),
        optimizer=attrs.get("optimizer", study.study_name.split("__")[-1]),
        trial=best.number,
        params=dict(best.params),
        value=value,
        reached=value is not None,
        best_metric=best.user_attrs.get("best_metric"),
        epochs=attrs.get("epochs"),
        complete_trials=len(complete_trials(study)),
        storage=storage,
        max_steps_per_epoch=attrs.get("max_steps_per_epoch"),
    )


def export_best(config: TuneConfig, path: Path) -> dict[str, Any]:
    """Write the best trial of every study of ``config`` as JSON to ``path``."""
    storage = open_storage(config.storage_url)
    studies = {}
    for workload, label in config.studies():
        name = study_name(workload, label)
        best = study_best(optuna.load_study(study_name=name, storage=storage), config.storage_url)
        if best is not None:
            studies[name] = asdict(best)
    data = {"storage": config.storage_url, "trials": config.trials, "studies": studies}
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    return data


def export_trials(config: TuneConfig, path: Path) -> pd.DataFrame:
    """Every trial of every study of ``config``, one row each, as CSV at ``path``: the
    whole budget's outcomes (Optuna's ``trials_dataframe``: number, value, state,
    ``params_*``, ``user_attrs_*``), so a study can be judged without its database."""
    storage = open_storage(config.storage_url)
    frames = []
    for workload, label in config.studies():
        name = study_name(workload, label)
        frame = optuna.load_study(study_name=name, storage=storage).trials_dataframe()
        frame.insert(0, "study", name)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.to_csv(path, index=False)
    return table


def load_best(source: str) -> dict[str, Best]:
    """``{study name: Best}`` from a storage URL (every study in it) or a file ``tune``
    wrote (``best_hparams.json``)."""
    if "://" in source:
        storage = open_storage(source)
        out = {}
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            best = study_best(study, source)
            if best is not None:
                out[best.study] = best
        return out
    data = json.loads(Path(source).read_text())
    return {name: Best(**entry) for name, entry in data.get("studies", {}).items()}


def apply_best(
    cells: Sequence[CellSpec], best: dict[str, Best], *, study_epochs: bool = True
) -> list[str]:
    """Give each cell its study's best hyperparameters (in ``overrides``, with
    ``hparams_source`` and ``study``) and, with ``study_epochs``, the study's epoch budget
    and its cut of each epoch (the schedule was tuned over them); returns the cells' study
    names that ``best`` lacks."""
    missing = []
    for spec in cells:
        name = study_name(spec.workload, spec.optimizer)
        found = best.get(name)
        if found is None:
            missing.append(name)
            continue
        spec.overrides = {**spec.overrides, **found.params}
        spec.hparams_source = found.source
        spec.study = name
        if study_epochs and found.epochs is not None:
            spec.epochs = int(found.epochs)
        if study_epochs and found.max_steps_per_epoch is not None:
            spec.max_steps_per_epoch = int(found.max_steps_per_epoch)
    return missing


def print_best(data: dict[str, Any], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    for name, entry in data["studies"].items():
        value = entry["value"]
        result = f"{value:.2f} s to target" if value is not None else "target not reached"
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in entry["params"].items()
        )
        print(
            f"{name}: trial {entry['trial']} of {entry['complete_trials']}, {result}; {params}",
            file=stream,
        )
