"""The paper's headline claims, and the matching numbers from our records.

Ou, Zhu, Huang, Liu, "Inverse-Free Fast Natural Gradient Descent Method for Deep Learning",
arXiv:2403.03473. The abstract of v2 states the two claims below (v1 gave 2.05× for the
first). The paper's hardware and schedule are described in its experimental section; they are
not restated here, so the report points there instead of guessing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from reports.common import SETTING, col, cols, ratio, workload_label
from reports.tables.epochs import PROJECT_EPOCHS
from reports.vocabulary import FNGD, display_name

PAPER = (
    "Ou, Zhu, Huang, Liu: Inverse-Free Fast Natural Gradient Descent Method for Deep "
    "Learning, arXiv:2403.03473 (v2)"
)
PAPER_CONDITIONS = (
    "the authors' own GPU setup, epochs and batch sizes as given in the paper's experimental "
    "section (not restated here); real CIFAR-100 and Multi30K data"
)


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    #: every term must occur in the workload name (lower case, letters and digits only)
    workload_terms: tuple[str, ...]
    baseline: str
    paper_value: str
    paper_conditions: str


CLAIMS = (
    Claim(
        key="resnet18-cifar100-kfac",
        text="FNGD trains ResNet-18 on CIFAR-100 2.07× faster than KFAC",
        workload_terms=("resnet18", "cifar100"),
        baseline="kfac",
        paper_value="2.07× speed-up vs KFAC (v1 of the paper: 2.05×)",
        paper_conditions="ResNet-18, CIFAR-100; " + PAPER_CONDITIONS,
    ),
    Claim(
        key="transformer-multi30k-adamw",
        text=(
            "FNGD beats AdamW by 24 BLEU on a Transformer trained on Multi30K, "
            "in almost the same training time"
        ),
        workload_terms=("transformer", "multi30k"),
        baseline="adamw",
        paper_value="+24 BLEU vs AdamW at almost the same training time",
        paper_conditions="Transformer, Multi30K; " + PAPER_CONDITIONS,
    ),
)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def matching_workloads(claim: Claim, workloads: list[str]) -> list[str]:
    return [w for w in workloads if all(t in _norm(w) for t in claim.workload_terms)]


def _fmt_x(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}×"


def _conditions(df: pd.DataFrame, setting: dict, families: tuple[str, ...]) -> str:
    mask = df["family"].isin(families)
    for c in SETTING:
        mask &= df[c] == setting[c]
    rows = df.loc[mask]
    if rows.empty:
        return "no records"
    ep = rows.loc[rows["kind"] == "epoch"].groupby("run")["epoch"].nunique()
    cut = rows["max_steps_per_epoch"].dropna()
    source = setting["data_source"]
    parts = [
        f"device: {setting['device_name']}",
        "data: " + ("SYNTHETIC (stand-in data)" if source == "synthetic" else str(source)),
        "epochs: "
        + (", ".join(str(int(e)) for e in sorted(set(ep))) if len(ep) else "none")
        + (f" (cut to at most {int(cut.max())} steps each)" if len(cut) else ""),
        f"batch size: {int(setting['batch_size'])}" if setting["batch_size"] else "",
        f"seeds: {rows['seed'].nunique()}",
    ]
    if setting.get("size"):
        parts.insert(0, f"size: {setting['size']}")
    return "; ".join(p for p in parts if p)


def _setting(row: pd.Series) -> dict:
    return {c: row[c] for c in SETTING}


def _speed_claim(claim: Claim, workload: str, speed: pd.DataFrame) -> list[tuple[str, str, dict]]:
    """(compared pair, our numbers, setting) per FNGD/baseline pair on ``workload``."""
    s = (
        speed.loc[(speed["workload"] == workload) & (speed["baseline_optimizer"] == claim.baseline)]
        if not speed.empty
        else speed
    )
    out = []
    for _, r in s.iterrows():
        parts = [f"PROJECTED {PROJECT_EPOCHS} epochs: {_fmt_x(r['projected_100'])}"]
        if not math.isnan(r["measured_run"]):
            parts.append(
                f"measured {int(r['measured_epochs'])} epochs: {_fmt_x(r['measured_run'])}"
            )
        parts.append(f"per step: {_fmt_x(r['per_step'])}")
        if not math.isnan(r["time_to_target"]):
            parts.append(f"time to target {r['target']:g}: {_fmt_x(r['time_to_target'])}")
        out.append((f"{r['fngd']} vs {r['baseline']}", "; ".join(parts), _setting(r)))
    return out


def _metric_claim(claim: Claim, workload: str, final: pd.DataFrame) -> list[tuple[str, str, dict]]:
    """(compared pair, our numbers, setting) per FNGD/baseline pair on ``workload``."""
    f = final.loc[final["workload"] == workload] if not final.empty else final
    if f.empty:
        return []
    name = display_name(claim.baseline)
    fn = f.loc[f["family"] == FNGD]
    base = f.loc[f["family"] == claim.baseline]
    pairs = fn.merge(base, on=SETTING, suffixes=("_f", "_b"))
    out = []
    for _, r in pairs.iterrows():
        metric = r["metric_f"] if isinstance(r["metric_f"], str) else "metric"
        a, b = r["metric_median_f"], r["metric_median_b"]
        if math.isnan(a) or math.isnan(b):
            text = f"{metric}: not recorded for both"
        else:
            text = (
                f"{metric}: FNGD {a:.4g} vs {name} {b:.4g} "
                f"(difference {a - b:+.4g}, medians over runs)"
            )
        time_ratio = ratio(r["wall_median_s_f"], r["wall_median_s_b"])
        if not math.isnan(time_ratio):
            text += f"; training time FNGD ÷ {name}: {time_ratio:.2f}"
        out.append((f"{r['opt_f']} vs {r['opt_b']}", text, _setting(r)))
    return out


CLAIM_COLUMNS = cols(
    col("claim", "claim"),
    col("paper", "paper"),
    col("paper_conditions", "paper's conditions"),
    col("workload", "our workload"),
    col("compared", "compared"),
    col("ours", "ours"),
    col("our_conditions", "our conditions"),
)


def compare(df: pd.DataFrame, speed: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """One row per (claim, FNGD/baseline pair in a matching workload): the paper's number
    beside ours, each with its conditions."""
    workloads = sorted(set(df["workload"])) if not df.empty else []
    rows = []
    for claim in CLAIMS:
        base = {
            "claim": claim.text,
            "paper": claim.paper_value,
            "paper_conditions": claim.paper_conditions,
        }
        matches = matching_workloads(claim, workloads)
        if not matches:
            rows.append(
                base
                | {
                    "workload": "",
                    "compared": "",
                    "ours": "no matching workload in these records (needs a workload whose "
                    "name holds " + " and ".join(claim.workload_terms) + ")",
                    "our_conditions": "",
                }
            )
            continue
        for w in matches:
            found = (
                _speed_claim(claim, w, speed)
                if claim.baseline == "kfac"
                else _metric_claim(claim, w, final)
            )
            if not found:
                rows.append(
                    base
                    | {
                        "workload": w,
                        "compared": "",
                        "ours": f"no FNGD and {display_name(claim.baseline)} results "
                        "to compare on this workload",
                        "our_conditions": "",
                    }
                )
            for compared, ours, setting in found:
                rows.append(
                    base
                    | {
                        "workload": workload_label(setting),
                        "compared": compared,
                        "ours": ours,
                        "our_conditions": _conditions(df, setting, (FNGD, claim.baseline)),
                    }
                )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS.csv)
