"""Tests of the HTML report (``reports``) on generated and hand-built records.

The records written here are test fixtures in the documented schema
(docs/ARCHITECTURE.md, "Records"); they are made up and never presented as results.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from reports import build_report, load_records
from reports.common import prepare, record_count
from reports.tables.epochs import epoch_times
from reports.tables.phases import phase_times
from reports.tables.speedup import speedup, time_to_target
from reports.tables.steps import step_times

SECTION_TITLES = (
    "Summary",
    "Environment",
    "Speedup",
    "Convergence",
    "Per-step time",
    "Per-epoch time",
    "Phase breakdown",
    "FNGD design space",
    "Memory",
    "Cost against batch size",
    "Profile",
    "Failed cells",
    "Input problems",
)

# ------------------------------------------------------------------ fixture generator

_T0 = 1_732_500_000.0
_H100, _EPYC = "NVIDIA H100 80GB HBM3", "AMD EPYC 7763 64-Core Processor"
_WORKLOADS = {
    # name: (data_source, device, device_name, batch sizes, metric, base step seconds, size)
    "resnet18-cifar100": ("synthetic", "cuda", _H100, (128,), "accuracy", 0.030, "paper"),
    "transformer-multi30k": ("synthetic", "cuda", _H100, (64,), "bleu", 0.020, "paper"),
    "mlp-digits": ("real", "cpu", _EPYC, (64, 256), "accuracy", 0.002, "small"),
}
#: optimizer labels that are variants of a family (bench/labels.py): label -> family
_VARIANTS = {"kfac-inv1": "kfac", "fngd-iter": "fngd"}
_HPARAMS = {
    "sgd": ("torch", {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}),
    "adamw": ("torch", {"lr": 1e-3, "weight_decay": 1e-2}),
    "kfac": ("builtin", {"lr": 0.1, "damping": 1e-3, "inv_update_steps": 3}),
    "ngd": ("builtin", {"lr": 0.1, "damping": 1e-3}),
    "fngd": ("builtin", {"lr": 0.1, "damping": 1e-3, "share": "sample"}),
}
# (multiplier of the base step, per optimizer and mode); learning speed for the curves
_COST = {
    ("sgd", None): 1.0,
    ("adamw", None): 1.1,
    ("kfac", "inverse"): 3.2,
    ("kfac", "no_inverse"): 1.7,
    ("ngd", None): 2.9,
    ("fngd", "inversion"): 2.4,
    ("fngd", "weighted_sum"): 1.2,
    ("kfac-inv1", "inverse"): 3.3,
    ("fngd-iter", "inversion"): 2.3,
    ("fngd-iter", "weighted_sum"): 1.25,
}
_RATE = {
    "sgd": 0.35,
    "adamw": 0.3,
    "kfac": 0.6,
    "ngd": 0.65,
    "fngd": 0.6,
    "kfac-inv1": 0.62,
    "fngd-iter": 0.58,
}
STEPS_PER_EPOCH = 6
WARMUP_STEPS = 2


def _mode(opt: str, epoch: int, step: int) -> str | None:
    if opt.startswith("fngd"):
        return "inversion" if epoch == 0 else "weighted_sum"
    if opt == "kfac-inv1":
        return "inverse"
    if opt == "kfac":
        return "inverse" if step % 3 == 0 else "no_inverse"
    return None


def _phases(opt: str, mode: str | None, total: float) -> list[tuple[str, str | None, float]]:
    """(phase, parent, seconds) of one step taking ``total`` seconds."""
    common = [("data", None, 0.05), ("forward", None, 0.25), ("backward", None, 0.4)]
    extra: list[tuple[str, str | None, float]] = []
    opt = _VARIANTS.get(opt, opt)
    if opt == "fngd" and mode == "inversion":
        extra = [
            ("fngd/gram", None, 0.12),
            ("fngd/solve", None, 0.08),
            ("fngd/weighted_sum", None, 0.04),
        ]
    elif opt == "fngd":
        extra = [("fngd/weighted_sum", "backward", 0.1)]
    elif opt == "ngd":
        extra = [
            ("fngd/gram", None, 0.14),
            ("fngd/solve", None, 0.1),
            ("fngd/weighted_sum", None, 0.04),
        ]
    elif opt == "kfac":
        extra = [("kfac/factors", None, 0.1), ("kfac/precondition", None, 0.06)]
        if mode == "inverse":
            extra.append(("kfac/inverse", None, 0.2))
    parts = common + extra + [("update", None, 0.08)]
    top = sum(f for _, p, f in parts if p is None)
    return [(name, parent, total * 0.97 * f / top) for name, parent, f in parts]


def generate_records(
    workloads: tuple[str, ...] = tuple(_WORKLOADS),
    optimizers: tuple[str, ...] = ("sgd", "adamw", "kfac", "ngd", "fngd"),
    seeds: tuple[int, ...] = (0, 1),
    epochs: int = 3,
    failures: bool = True,
    variants: tuple[str, ...] = (),
) -> list[dict]:
    """Made-up records in the documented schema: a test fixture, not a measurement.

    ``variants`` (e.g. ``kfac-inv1``, ``fngd-iter``) run on the first workload only. The
    paper-size workloads have epochs cut to ``STEPS_PER_EPOCH`` steps, as the runner's
    ``paper`` preset does.
    """
    rng = random.Random(1234)
    out: list[dict] = []
    now = [_T0]  # the records' clock
    for w in workloads:
        source, device, device_name, sizes, metric, base, size = _WORKLOADS[w]
        for bs in sizes:
            opts = (
                optimizers
                if bs == sizes[0]
                else tuple(o for o in optimizers if o in ("sgd", "fngd"))
            )
            if w == workloads[0] and bs == sizes[0]:
                opts = opts + variants
            for opt in opts:
                family = _VARIANTS.get(opt, opt)
                impl, hp = _HPARAMS[family]
                for seed in seeds if bs == sizes[0] else seeds[:1]:
                    run = f"{w}__{opt}__s{seed}"
                    common = {
                        "run_id": run,
                        "workload": w,
                        "optimizer": opt,
                        "family": family,
                        "size": size,
                        "attempt": 1,
                        "impl": impl,
                        "max_steps_per_epoch": STEPS_PER_EPOCH if size == "paper" else None,
                        "steps_per_epoch": STEPS_PER_EPOCH,
                        "epochs": epochs,
                        "hparams": hp,
                        "seed": seed,
                        "device": device,
                        "device_name": device_name,
                        "data_source": source,
                        "batch_size": bs,
                        "epoch": None,
                        "step": None,
                        "phase": None,
                        "seconds": None,
                        "name": None,
                        "value": None,
                        "torch_version": "2.4.1",
                        "cuda_version": "12.4" if device == "cuda" else None,
                        "git_commit": "0123456789abcdef0123456789abcdef01234567",
                    }

                    def rec(kind: str, _c=common, **kw) -> dict:
                        r = dict(_c, kind=kind, time=now[0])
                        r.update(kw)
                        return r

                    out.append(rec("cell", name="started", value=""))
                    if failures and w == "resnet18-cifar100" and opt == "kfac" and seed == 1:
                        out.append(
                            rec(
                                "cell",
                                name="oom",
                                value="CUDA out of memory (tried to allocate 2.0 GiB)",
                            )
                        )
                        continue
                    diverge_at = (
                        1
                        if failures and w == "transformer-multi30k" and opt == "ngd" and seed == 1
                        else None
                    )
                    wall = 0.0
                    reached = False
                    for epoch in range(epochs):
                        ep_seconds = 0.0
                        for step in range(STEPS_PER_EPOCH):
                            mode = _mode(opt, epoch, step)
                            warm = epoch == 0 and step < WARMUP_STEPS
                            total = base * _COST[(opt, mode)] * bs / sizes[0]
                            total *= rng.uniform(0.95, 1.08) * (3.0 if warm else 1.0)
                            for name, parent, secs in _phases(opt, mode, total):
                                out.append(
                                    rec(
                                        "phase",
                                        epoch=epoch,
                                        step=step,
                                        phase=name,
                                        parent=parent,
                                        seconds=secs,
                                        warmup=warm,
                                        mode=mode,
                                    )
                                )
                            out.append(
                                rec(
                                    "step",
                                    epoch=epoch,
                                    step=step,
                                    seconds=total,
                                    warmup=warm,
                                    mode=mode,
                                )
                            )
                            ep_seconds += total
                            now[0] += total
                        ep_seconds *= 1.02
                        wall += ep_seconds
                        k = _RATE[opt] * (epoch + 1) * rng.uniform(0.9, 1.1)
                        if diverge_at is not None and epoch >= diverge_at:
                            out.append(
                                rec(
                                    "epoch",
                                    epoch=epoch,
                                    seconds=ep_seconds,
                                    name="train_loss",
                                    value=None,
                                )
                            )
                            out.append(
                                rec(
                                    "cell",
                                    epoch=epoch,
                                    name="diverged",
                                    value=f"train loss is nan at epoch {epoch}",
                                )
                            )
                            break
                        out.append(
                            rec(
                                "epoch",
                                epoch=epoch,
                                seconds=ep_seconds,
                                name="train_loss",
                                value=4.6 * math.exp(-k) + 0.05,
                                steps=STEPS_PER_EPOCH,
                                train_seconds=wall,
                            )
                        )
                        score = (1 - math.exp(-k)) * (40.0 if metric == "bleu" else 0.8)
                        out.append(
                            rec(
                                "eval",
                                epoch=epoch,
                                seconds=wall,
                                name="eval_loss",
                                value=4.7 * math.exp(-0.9 * k) + 0.1,
                            )
                        )
                        out.append(rec("eval", epoch=epoch, seconds=wall, name=metric, value=score))
                        target = 20.0 if metric == "bleu" else 0.4
                        if not reached and score >= target:
                            reached = True
                            out.append(
                                rec(
                                    "target",
                                    epoch=epoch,
                                    seconds=wall,
                                    name="time_to_target",
                                    value=target,
                                    metric=metric,
                                    metric_value=score,
                                )
                            )
                    else:
                        peak = "peak_allocated" if device == "cuda" else "peak_rss"
                        state = {
                            "sgd": 45e6,
                            "adamw": 90e6,
                            "kfac": 160e6,
                            "ngd": 210e6,
                            "fngd": 70e6,
                        }[family]
                        out.append(rec("memory", name=peak, value=1.5e9 + 2 * state))
                        out.append(rec("memory", name="optimizer_state", value=state))
                        if family in ("fngd", "ngd"):
                            out.append(
                                rec(
                                    "memory", name="optimizer_state/coefficients", value=state * 0.3
                                )
                            )
                        if family == "kfac":
                            out.append(
                                rec("memory", name="optimizer_state/factors", value=state * 0.5)
                            )
                        out.append(
                            rec("overhead", name="runner_overhead", value=rng.uniform(0.01, 0.03))
                        )
                        if (
                            seed == seeds[0]
                            and w == "resnet18-cifar100"
                            and opt in ("fngd", "kfac", "sgd")
                        ):
                            # what `fngd-bench profile` writes: per step, the whole step
                            # (phase null) and each phase; the first steps are warm-up
                            prof = dict(common, run_id=run + "__profile")
                            for step in range(6):
                                mode = _mode(opt, step // 3, step)
                                secs = base * _COST[(opt, mode)] * rng.uniform(0.95, 1.05)
                                parts = [(None, None, secs)] + _phases(opt, mode, secs)
                                for name, parent, t in parts:
                                    for what, v in (
                                        ("cpu_time", t * 0.4),
                                        ("gpu_time", t),
                                        ("count", 1),
                                    ):
                                        out.append(
                                            dict(
                                                prof,
                                                kind="profile",
                                                step=step,
                                                epoch=step // 3,
                                                phase=name,
                                                parent=parent,
                                                mode=mode,
                                                warmup=step == 0,
                                                name=what,
                                                value=v,
                                                time=now[0],
                                            )
                                        )
                        out.append(rec("cell", name="finished", value=""))
    return out


def write_records(directory: Path, records: list[dict], name: str = "records.jsonl") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path


def section_html(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, f"section {section_id} not found"
    return m.group(1)


def shared_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report on the generated records, built once per test session."""
    root = tmp_path_factory.getbasetemp() / "report-fixture"
    out = root / "out" / "report.html"
    if not out.is_file():
        recs = generate_records(variants=("kfac-inv1", "fngd-iter"))
        # two files in nested directories: reading must be recursive
        write_records(root / "results" / "a", recs[: len(recs) // 2])
        write_records(root / "results" / "b" / "c", recs[len(recs) // 2 :], "more.jsonl")
        build_report([root / "results"], out)
    return out


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_report(tmp_path_factory)


# ------------------------------------------------------------------------------- tests


def test_report_is_one_self_contained_file(full_report: Path) -> None:
    html = full_report.read_text(encoding="utf-8")
    assert full_report.is_file()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "<link" not in html.lower()
    assert "<script" not in html.lower()
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]+)"', html)
    assert len(srcs) >= 10
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    # relative hrefs are only the section anchors and the CSV files beside the report
    for href in re.findall(r'href="([^"]+)"', html):
        assert href.startswith("#") or (full_report.parent / href).is_file(), href
    assert full_report.stat().st_size < 5 * 2**20
    assert "could not be built" not in html


def test_report_has_every_section(full_report: Path) -> None:
    html = full_report.read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html, title


def test_report_writes_csv_tables(full_report: Path) -> None:
    out = full_report.parent
    for name in (
        "environment",
        "hparams",
        "step_times",
        "phase_times",
        "epoch_times",
        "speedup",
        "paper_claims",
        "time_to_target",
        "convergence",
        "final_values",
        "memory",
        "batch_scaling",
        "profile",
        "failed_cells",
    ):
        path = out / f"report_{name}.csv"
        assert path.is_file(), name
        assert len(pd.read_csv(path)) > 0, name


def test_report_content(full_report: Path) -> None:
    html = full_report.read_text(encoding="utf-8")
    # synthetic data is labelled: banner, table cells, figure captions
    assert 'id="synthetic-banner"' in html
    assert html.count('class="tag">SYNTHETIC DATA') >= 3
    assert 'class="synthetic"' in html or 'synthetic">' in html or ' synthetic"' in html
    speed = section_html(html, "speedup")
    assert "PROJECTED 100 epochs" in speed
    assert "2.07×" in speed and "+24 BLEU" in speed  # the paper's numbers, quoted
    _assert_paper_claims_match_records(full_report, speed)
    assert "resnet18-cifar100" in speed and "transformer-multi30k" in speed
    cells = section_html(html, "cells")
    assert "diverged" in cells and "oom" in cells and "CUDA out of memory" in cells
    assert "inversion" in section_html(html, "steps")
    assert "weighted_sum" in section_html(html, "phases")
    assert "n/a" not in section_html(html, "steps")
    env = section_html(html, "environment")
    for text in ("NVIDIA H100 80GB HBM3", "2.4.1", "12.4", "0123456789ab", "damping=0.001"):
        assert text in env
    assert "AdamW" in section_html(html, "speedup")
    speedup = pd.read_csv(full_report.parent / "report_speedup.csv")
    assert set(speedup["baseline_optimizer"]) == {"kfac", "ngd", "sgd", "adamw"}
    # the made-up costs put FNGD's later epochs below KFAC's
    kfac = speedup.loc[speedup["baseline_optimizer"] == "kfac"]
    assert (kfac["later_epochs"] > 1).all()
    # optimizer labels are grouped by family: fngd-iter is an FNGD, kfac-inv1 a KFAC
    resnet = speedup.loc[speedup["workload"] == "resnet18-cifar100"]
    assert set(resnet["fngd"]) == {"fngd", "fngd-iter"}
    assert {"kfac", "kfac-inv1"} <= set(resnet["baseline"])
    # the paper-size epochs were cut short, and the report says so where it matters
    for sid in ("speedup", "epochs"):
        assert "cut to at most 6 steps" in section_html(html, sid)
    assert "(cut to at most 6 steps each)" in section_html(html, "speedup")
    profile = pd.read_csv(full_report.parent / "report_profile.csv")
    assert set(profile["mode"]) >= {"inversion", "weighted_sum", "all"}
    assert (profile["steps"] <= 5).all()  # the warm-up step is left out
    assert "(whole step)" in set(profile["phase"])


def _of(recs: list[dict], kind: str, workload: str, optimizer: str) -> list[dict]:
    return [
        r
        for r in recs
        if r["kind"] == kind and r["workload"] == workload and r["optimizer"] == optimizer
    ]


def _assert_paper_claims_match_records(report: Path, speed_html: str) -> None:
    """The "ours" numbers of the paper-claims table, recomputed from the generated records.

    Per step (ResNet-18, FNGD vs KFAC): KFAC's median non-warm-up step ÷ FNGD's. Training
    time (Transformer, FNGD vs AdamW): median over runs of FNGD's summed epoch times ÷
    AdamW's; BLEU: median over runs of each run's last BLEU.
    """
    recs = generate_records(variants=("kfac-inv1", "fngd-iter"))
    claims = pd.read_csv(report.parent / "report_paper_claims.csv")

    def median_step(w: str, opt: str) -> float:
        return statistics.median(r["seconds"] for r in _of(recs, "step", w, opt) if not r["warmup"])

    def per_run(kind: str, w: str, opt: str, pick: Callable[[list[dict]], float]) -> float:
        runs: dict[str, list[dict]] = {}
        for r in _of(recs, kind, w, opt):
            runs.setdefault(r["run_id"], []).append(r)
        return statistics.median(pick(rs) for rs in runs.values())

    w = "resnet18-cifar100"
    (ours,) = claims.loc[
        claims["workload"].str.startswith(w) & (claims["compared"] == "fngd vs kfac"), "ours"
    ]
    m = re.search(r"per step: ([0-9.]+)×", ours)
    assert m, ours
    expected = median_step(w, "kfac") / median_step(w, "fngd")
    assert expected > 1.0  # the made-up costs: KFAC's steps are the slower ones
    assert float(m.group(1)) == pytest.approx(expected, abs=0.005)
    assert ours in speed_html

    w = "transformer-multi30k"
    (ours,) = claims.loc[
        claims["workload"].str.startswith(w) & (claims["compared"] == "fngd vs adamw"), "ours"
    ]

    def total(rs: list[dict]) -> float:
        return sum(r["seconds"] for r in rs)

    def last_bleu(rs: list[dict]) -> float:
        return max((r for r in rs if r["name"] == "bleu"), key=lambda r: r["epoch"])["value"]

    m = re.search(r"training time FNGD ÷ AdamW: ([0-9.]+)", ours)
    assert m, ours
    expected = per_run("epoch", w, "fngd", total) / per_run("epoch", w, "adamw", total)
    assert float(m.group(1)) == pytest.approx(expected, abs=0.005)
    m = re.search(r"bleu: FNGD ([0-9.e+-]+) vs AdamW ([0-9.e+-]+) \(difference ([0-9.e+-]+)", ours)
    assert m, ours
    fngd, adamw = (per_run("eval", w, o, last_bleu) for o in ("fngd", "adamw"))
    assert [float(g) for g in m.groups()] == pytest.approx([fngd, adamw, fngd - adamw], rel=1e-3)
    assert ours in speed_html


# ---------------------------------------------------------------- hand-built records


def _rec(kind: str, optimizer: str, **kw) -> dict:
    base = {
        "run_id": f"{optimizer}-0",
        "workload": "w",
        "optimizer": optimizer,
        "impl": "torch",
        "hparams": {"lr": 0.1},
        "seed": 0,
        "device": "cpu",
        "device_name": "cpu-x",
        "data_source": "real",
        "batch_size": 4,
        "kind": kind,
        "epoch": 0,
        "step": 0,
        "phase": None,
        "seconds": None,
        "name": None,
        "value": None,
        "torch_version": "2.4.1",
        "cuda_version": None,
        "git_commit": "abc",
        "time": _T0,
    }
    base.update(kw)
    return base


def tiny_records() -> list[dict]:
    r = []
    # SGD: steps 1, 2, 3 s (+ a warm-up step of 100 s that must be ignored) -> median 2
    r.append(_rec("step", "sgd", step=0, seconds=100.0, warmup=True))
    for i, s in enumerate((1.0, 2.0, 3.0), start=1):
        r.append(_rec("step", "sgd", epoch=i - 1, step=i, seconds=s, warmup=False))
    # FNGD: inversion steps 4, 6; weighted-sum steps 1, 1, 1 -> median of all = 1
    for i, (ep, s, mode) in enumerate(
        [
            (0, 4.0, "inversion"),
            (0, 6.0, "inversion"),
            (1, 1.0, "weighted_sum"),
            (1, 1.0, "weighted_sum"),
            (2, 1.0, "weighted_sum"),
        ]
    ):
        r.append(_rec("step", "fngd", epoch=ep, step=i, seconds=s, warmup=False, mode=mode))
    # one weighted-sum step: backward 0.8 s holding a 0.3 s weighted sum -> exclusive 0.5
    r.append(
        _rec(
            "phase",
            "fngd",
            epoch=1,
            step=2,
            phase="backward",
            parent=None,
            seconds=0.8,
            warmup=False,
            mode="weighted_sum",
        )
    )
    r.append(
        _rec(
            "phase",
            "fngd",
            epoch=1,
            step=2,
            phase="fngd/weighted_sum",
            parent="backward",
            seconds=0.3,
            warmup=False,
            mode="weighted_sum",
        )
    )
    r.append(
        _rec(
            "phase",
            "fngd",
            epoch=1,
            step=2,
            phase="update",
            parent=None,
            seconds=0.1,
            warmup=False,
            mode="weighted_sum",
        )
    )
    # warm-up phase records are ignored
    r.append(
        _rec(
            "phase",
            "fngd",
            epoch=0,
            step=0,
            phase="backward",
            parent=None,
            seconds=50.0,
            warmup=True,
            mode="inversion",
        )
    )
    # epochs: FNGD 10, 4, 6 -> first 10, later median 5, projected 10 + 99 * 5 = 505
    for ep, s in enumerate((10.0, 4.0, 6.0)):
        r.append(_rec("epoch", "fngd", epoch=ep, seconds=s, name="train_loss", value=1 / (ep + 1)))
    # SGD: 3, 3, 3 -> projected 300
    for ep in range(3):
        r.append(_rec("epoch", "sgd", epoch=ep, seconds=3.0, name="train_loss", value=2.0 - ep))
    return r


def test_numbers_on_hand_built_records(tmp_path: Path) -> None:
    write_records(tmp_path / "in", tiny_records())
    df, problems = load_records([tmp_path / "in"])
    assert problems == []
    df = prepare(df)
    steps = step_times(df).set_index(["optimizer", "mode"])
    assert steps.loc[("sgd", "all"), "median_s"] == pytest.approx(2.0)
    assert steps.loc[("sgd", "all"), "n"] == 3
    assert steps.loc[("sgd", "all"), "iqr_s"] == pytest.approx(1.0)
    assert steps.loc[("fngd", "all"), "median_s"] == pytest.approx(1.0)
    assert steps.loc[("fngd", "all"), "ratio_to_sgd"] == pytest.approx(0.5)
    assert steps.loc[("fngd", "inversion"), "median_s"] == pytest.approx(5.0)
    assert steps.loc[("fngd", "inversion"), "ratio_to_sgd"] == pytest.approx(2.5)
    assert steps.loc[("fngd", "weighted_sum"), "n"] == 3

    phases = phase_times(df).set_index(["optimizer", "mode", "phase"])
    back = phases.loc[("fngd", "weighted_sum", "backward")]
    assert back["median_s"] == pytest.approx(0.8)
    assert back["excl_median_s"] == pytest.approx(0.5)
    assert back["n"] == 1
    ws = phases.loc[("fngd", "weighted_sum", "fngd/weighted_sum")]
    assert ws["excl_median_s"] == pytest.approx(0.3)
    assert ws["parent"] == "backward"
    assert ("fngd", "inversion", "backward") not in phases.index  # warm-up only

    epochs = epoch_times(df).set_index("optimizer")
    assert epochs.loc["fngd", "first_median_s"] == pytest.approx(10.0)
    assert epochs.loc["fngd", "later_median_s"] == pytest.approx(5.0)
    assert epochs.loc["fngd", "projected_100_s"] == pytest.approx(505.0)
    assert epochs.loc["fngd", "first_modes"] == "inversion"
    assert epochs.loc["fngd", "later_modes"] == "weighted_sum"
    assert epochs.loc["sgd", "projected_100_s"] == pytest.approx(300.0)
    assert epochs.loc["fngd", "measured_median_s"] == pytest.approx(20.0)

    speed = speedup(step_times(df), epoch_times(df), time_to_target(df)).set_index(
        "baseline_optimizer"
    )
    assert speed.loc["sgd", "per_step"] == pytest.approx(2.0)
    assert speed.loc["sgd", "projected_100"] == pytest.approx(300.0 / 505.0)
    assert speed.loc["sgd", "first_epoch"] == pytest.approx(0.3)
    assert speed.loc["sgd", "later_epochs"] == pytest.approx(0.6)
    assert speed.loc["sgd", "measured_run"] == pytest.approx(9.0 / 20.0)


def test_numbers_reach_the_report(tmp_path: Path) -> None:
    write_records(tmp_path / "in", tiny_records())
    out = build_report([tmp_path / "in"], tmp_path / "r.html")
    steps = pd.read_csv(tmp_path / "r_step_times.csv")
    fngd = steps.loc[(steps["optimizer"] == "fngd") & (steps["mode"] == "all")].iloc[0]
    assert fngd["ratio_to_sgd"] == pytest.approx(0.5)
    epochs = pd.read_csv(tmp_path / "r_epoch_times.csv").set_index("optimizer")
    assert epochs.loc["fngd", "projected_100_s"] == pytest.approx(505.0)
    html = out.read_text(encoding="utf-8")
    assert "505" in section_html(html, "epochs")
    assert "0.59×" in section_html(html, "speedup")  # 300 / 505
    # SGD present but no KFAC/AdamW: the speedup section says so
    missing = section_html(html, "speedup")
    assert "no KFAC, AdamW records" in missing


def test_latest_attempt_and_family_from_label(tmp_path: Path) -> None:
    old = [
        dict(r, attempt=1, seconds=r["seconds"] * 10)
        for r in tiny_records()
        if r["optimizer"] == "sgd"
    ]
    new = [dict(r, attempt=2) for r in tiny_records()]
    variant = [
        dict(r, optimizer="kfac-inv1", run_id="kfac-inv1-0")
        for r in tiny_records()
        if r["optimizer"] == "sgd"
    ]
    write_records(tmp_path / "in", old + new + variant)
    df, _ = load_records([tmp_path / "in"])
    df = prepare(df)
    steps = step_times(df).set_index(["optimizer", "mode"])
    assert steps.loc[("sgd", "all"), "median_s"] == pytest.approx(2.0)  # attempt 2 only
    assert steps.loc[("kfac-inv1", "all"), "family"] == "kfac"


def test_corrupt_line_is_reported_and_skipped(tmp_path: Path) -> None:
    path = write_records(tmp_path / "in", tiny_records())
    lines = path.read_text().splitlines()
    good = len(lines)
    lines.insert(3, '{"run_id": "x", "kind": "step", "seconds": ')  # truncated write
    lines.append("not json at all")
    lines.append(json.dumps({"kind": "step"}))  # no workload/optimizer
    path.write_text("\n".join(lines) + "\n")
    df, problems = load_records([tmp_path / "in"])
    assert record_count(df) == good  # a step's phase records are in its row, and counted
    assert len(df) == good - 3  # 4 phase records: 3 in their step's row, 1 on its own
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:4:")
    assert f"{path}:{good + 2}:" in problems[1]
    assert "missing workload, optimizer" in problems[2]
    out = build_report([tmp_path / "in"], tmp_path / "r.html")
    html = section_html(out.read_text(encoding="utf-8"), "problems")
    assert f"{path.name}:4: not valid JSON" in html


def test_empty_directory_gives_a_report_saying_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = build_report([tmp_path / "empty"], tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    assert 'id="no-records"' in html
    # sections with nothing to show are left out and listed once, with why, at the end
    not_shown = section_html(html, "not-shown")
    for sid, title in (
        ("environment", "Environment"),
        ("speedup", "Speedup"),
        ("convergence", "Convergence"),
        ("steps", "Per-step time"),
        ("epochs", "Per-epoch time"),
        ("phases", "Phase breakdown"),
        ("memory", "Memory"),
        ("batch", "Cost against batch size"),
        ("profile", "Profile"),
        ("cells", "Failed cells"),
    ):
        assert f'<section id="{sid}">' not in html, sid
        assert title in not_shown, title
    assert "No records" in not_shown
    assert not_shown.count("<li>") < 10  # one line per reason, not one per section
    assert "could not be built" not in html
    assert "<img" not in html


def test_missing_directory_is_a_problem_not_an_error(tmp_path: Path) -> None:
    out = build_report([tmp_path / "nowhere"], tmp_path / "r.html")
    assert "no such file or directory" in section_html(out.read_text(), "problems")


def test_one_optimizer_only(tmp_path: Path) -> None:
    recs = generate_records(workloads=("mlp-digits",), optimizers=("fngd",), seeds=(0,))
    write_records(tmp_path / "in", recs)
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    speed = section_html(html, "speedup")
    assert "Only FNGD records" in speed
    assert "no SGD records, so no ratio to SGD" in section_html(html, "steps")
    assert "could not be built" not in html

    recs = generate_records(workloads=("mlp-digits",), optimizers=("sgd",), seeds=(0,))
    write_records(tmp_path / "sgd", recs)
    html = build_report([tmp_path / "sgd"], tmp_path / "s.html").read_text()
    assert "No FNGD records" in section_html(html, "speedup")
    assert "could not be built" not in html


def test_missing_sgd_baseline(tmp_path: Path) -> None:
    recs = generate_records(
        workloads=("resnet18-cifar100",), optimizers=("kfac", "fngd"), failures=False
    )
    write_records(tmp_path / "in", recs)
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    steps = section_html(html, "steps")
    assert "no SGD records, so no ratio to SGD" in steps
    assert "n/a" in steps
    speed = section_html(html, "speedup")
    assert "no SGD, AdamW records" in speed
    assert "KFAC" in speed
    assert "could not be built" not in html


def test_single_epoch_has_no_projection(tmp_path: Path) -> None:
    recs = generate_records(
        workloads=("mlp-digits",), optimizers=("sgd", "fngd"), seeds=(0,), epochs=1
    )
    write_records(tmp_path / "in", recs)
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    assert "cannot be computed" in section_html(html, "speedup")
    assert "Only one epoch recorded" in section_html(html, "epochs")


def test_sections_without_data_are_listed_once_not_shown_empty(tmp_path: Path) -> None:
    """The quick preset's case: one batch size per workload and no profile records."""
    recs = generate_records(workloads=("transformer-multi30k",), seeds=(0,), failures=False)
    write_records(tmp_path / "in", recs)
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    for sid in ("batch", "profile"):
        assert f'<section id="{sid}">' not in html, sid
        assert f'href="#{sid}"' not in html, sid
    not_shown = section_html(html, "not-shown")
    assert "<strong>Cost against batch size</strong>: Every workload" in not_shown
    assert "<strong>Profile</strong>: No &#39;profile&#39; records" in not_shown
    assert 'href="#not-shown"' in html
    assert "Missing:" not in section_html(html, "memory")


def test_every_count_of_runs_counts_training_cells_only(tmp_path: Path) -> None:
    """Overhead measurements and profiles have their own run ids; they are not runs."""
    recs = generate_records(workloads=("resnet18-cifar100",), seeds=(0,), failures=False)
    overhead = dict(recs[0], run_id="overhead__resnet18-cifar100__kfac__cuda", kind="overhead")
    overhead.update(name="runner_overhead", value=0.02, step=None, phase=None)
    write_records(tmp_path / "in", [*recs, overhead])
    cells = {r["run_id"] for r in recs if r["kind"] == "cell"}
    assert any(r["kind"] == "profile" for r in recs)  # with run ids of their own
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    assert f"<dt>runs</dt><dd>{len(cells)}</dd>" in html
    env = pd.read_csv(tmp_path / "r_environment.csv")
    assert env["runs"].sum() == len(cells)
    sources = pd.read_csv(tmp_path / "r_data_sources.csv")
    assert sources["runs"].sum() == len(cells)


def test_memory_is_the_peak_above_the_baseline_before_training(tmp_path: Path) -> None:
    """New records carry the baseline each cell held before training; old ones do not and
    keep their whole-process peak, labelled."""
    recs = generate_records(workloads=("mlp-digits",), seeds=(0,), failures=False)
    baseline = 1.2e9
    with_base = [
        dict(r, name="baseline_rss", value=baseline, epoch=None)
        for r in recs
        if r["kind"] == "memory" and r["name"] == "peak_rss" and r["optimizer"] != "sgd"
    ]
    write_records(tmp_path / "in", recs + with_base)
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    mem = pd.read_csv(tmp_path / "r_memory.csv")
    mem = mem.loc[mem["batch_size"] == 64].set_index("optimizer")
    fngd, sgd = mem.loc["fngd"], mem.loc["sgd"]
    assert fngd["baseline_bytes"] == pytest.approx(baseline)
    assert fngd["above_baseline_bytes"] == pytest.approx(fngd["peak_bytes"] - baseline)
    assert math.isnan(sgd["baseline_bytes"]) and math.isnan(sgd["above_baseline_bytes"])
    assert sgd["peak_bytes"] > 0
    section = section_html(html, "memory")
    assert "peak above baseline (MiB)" in section
    assert "no baseline before training" in section


def test_profile_summary_shows_its_spread_and_flags_steps_that_disagree(tmp_path: Path) -> None:
    """Two profiled steps of one mode at 137.7 ms and 1.28 ms: shown with min and max, and
    flagged; steady steps are not."""
    recs = generate_records(
        workloads=("resnet18-cifar100",), optimizers=("sgd", "fngd"), seeds=(0,), failures=False
    )
    prof = [
        r
        for r in recs
        if r["kind"] == "profile"
        and r["optimizer"] == "fngd"
        and r["phase"] is None
        and r["name"] == "gpu_time"
        and not r["warmup"]
        and r["mode"] == "weighted_sum"
    ]
    assert len(prof) >= 2
    prof[0]["value"], prof[1]["value"] = 0.1377, 0.00128
    write_records(tmp_path / "in", recs)
    html = build_report([tmp_path / "in"], tmp_path / "r.html").read_text()
    table = pd.read_csv(tmp_path / "r_profile.csv")
    whole = table.loc[table["phase"] == "(whole step)"].set_index(["optimizer", "mode"])
    row = whole.loc[("fngd", "weighted_sum")]
    assert row["gpu_min_s"] == pytest.approx(0.00128)
    assert row["gpu_max_s"] == pytest.approx(0.1377)
    assert row["gpu_min_s"] <= row["gpu_time_s"] <= row["gpu_max_s"]
    assert row["spread"] == pytest.approx(0.1377 / 0.00128)
    steady = whole.loc[("sgd", "all")]
    assert 1.0 <= steady["spread"] < 1.2
    section = section_html(html, "profile")
    assert "Warning:" in section
    assert "fngd · weighted_sum: repeated steps disagree widely, 1.28 to 138 ms GPU" in section
    assert section.count("disagree widely") == 1


def test_a_partly_preconditioned_optimiser_says_so_beside_its_figures(tmp_path: Path) -> None:
    """FNGD that left parameters plain is labelled with the share it preconditioned in every
    table; one that preconditioned all (or records without the share) is not."""
    records = [
        dict(r, hparams={"lr": 0.1, "preconditioned": 0.467}) if r["optimizer"] == "fngd" else r
        for r in tiny_records()
    ]
    write_records(tmp_path / "in", records)
    out = build_report([tmp_path / "in"], tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    for section in ("steps", "epochs", "verdict"):
        assert "fngd (47% preconditioned)" in section_html(html, section), section
    steps = pd.read_csv(tmp_path / "r_step_times.csv")
    assert set(steps.loc[steps["optimizer"] == "fngd", "opt"]) == {"fngd (47% preconditioned)"}
    assert set(steps.loc[steps["optimizer"] == "sgd", "opt"]) == {"sgd"}
