"""The rivals (fngd/optimizers/rivals/): they train, tune and report through the suite, each
is wired to its library as its module says, and a missing library is one clear error.

Each test needs the rival's library (the ``rivals`` extra) and is skipped, saying which,
where it is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cell import CellSpec, run_cell
from bench.cli import main
from bench.records import RecordWriter, read_jsonl
from bench.workloads import Workload
from fngd.optimizers import PluginError, build
from fngd.optimizers.rivals import muon
from reports.load import load_records

po = pytest.importorskip("pytorch_optimizer", reason="the rivals extra is not installed")
sf = pytest.importorskip("schedulefree", reason="the rivals extra is not installed")

RIVALS = ("muon", "soap", "psgd-kron", "sf-adamw")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 1, 10, generator=g), torch.randint(0, 3, (32,), generator=g)


def _step(opt, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_each_rival_trains_through_the_cli_and_its_records_name_it(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    code = main(
        ["run", "--workload", "mlp-digits", "--optimizer", *RIVALS, "--seeds", "0",
         "--epochs", "2", "--max-steps-per-epoch", "4", "--no-overhead", "--no-report",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    df, problems = load_records(out)
    assert problems == []
    assert set(df["optimizer"]) == set(RIVALS)
    steps = df.loc[df["kind"] == "step"]
    assert set(steps["family"]) == set(RIVALS)
    impl = steps.groupby("optimizer")["impl"].first()
    assert impl["sf-adamw"].startswith("schedulefree ")
    assert impl["soap"].startswith("pytorch-optimizer ")
    modes = steps.groupby("optimizer")["mode"].agg(lambda m: set(m.dropna()))
    assert modes["soap"] == {"init", "adam"}  # 8 steps: the eigenbasis first refreshes at 11
    assert modes["psgd-kron"] == {"precondition"}  # probability 1 for the first 500 steps
    evals = df.loc[(df["kind"] == "eval") & (df["name"] == "accuracy")]
    assert len(evals) == 2 * len(RIVALS)


def test_the_rivals_preset_runs_fngd_its_baselines_and_every_rival(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    code = main(
        ["run", "--preset", "rivals", "--workload", "mlp-digits", "--seeds", "0", "--epochs",
         "1", "--max-steps-per-epoch", "2", "--no-overhead", "--no-report", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    df, problems = load_records(out)
    assert problems == []
    expected = {"sgd", "adamw", "kfac", "fngd", "fngd-net", *RIVALS}
    assert set(df.loc[df["kind"] == "epoch", "optimizer"]) == expected


def test_muon_takes_matrices_and_kernels_and_leaves_the_head_biases_and_embeddings() -> None:
    model = nn.Sequential(nn.Embedding(5, 4), nn.Conv1d(4, 6, 3), nn.Linear(6, 6), nn.Linear(6, 2))
    matrices, rest = muon.split(model)
    conv, hidden, head = model[1], model[2], model[3]
    assert [id(p) for p in matrices] == [id(conv.weight), id(hidden.weight)]
    assert {id(p) for p in rest} == {
        id(model[0].weight), id(conv.bias), id(hidden.bias), id(head.weight), id(head.bias)
    }  # fmt: skip
    opt = build("muon", model)
    total = sum(p.numel() for p in model.parameters())
    share = (conv.weight.numel() + hidden.weight.numel()) / total
    assert opt.hparams["muon_fraction"] == pytest.approx(share)


def test_muon_orthogonalises_kernels_and_steps_the_rest_as_adamw_in_float64() -> None:
    model = _net().double()
    ref = _net().double()
    x, y = _batch()
    x = x.double()
    lr, wd, betas, eps = 1e-2, 0.0, (0.9, 0.95), 1e-8
    opt = build("muon", model, lr=lr, weight_decay=wd, betas=betas, eps=eps, nesterov=False)
    head = [ref[5].weight, ref[5].bias, ref[0].bias, ref[3].bias]
    adamw = torch.optim.AdamW(head, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    kernel = model[0].weight.detach().clone()
    _step(opt, model, x, y)
    _step(adamw, ref, x, y)
    for mine, theirs in ((model[5].weight, ref[5].weight), (model[0].bias, ref[0].bias)):
        assert torch.allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    # the kernel's step, as its (out, in x k) matrix, has near-equal singular values
    # (Newton-Schulz), scaled to AdamW's size: 0.2 sqrt(max(out, in x k))
    update = (kernel - model[0].weight.detach()).reshape(4, -1)
    s = torch.linalg.svdvals(update) / (lr * 0.2 * 3**0.5)
    assert s.min() > 0.5 and s.max() < 1.3, s


def test_muon_off_the_gpu_is_the_librarys_step_with_newton_schulz_in_float32() -> None:
    """With bfloat16 Newton-Schulz (what it runs on a GPU) the suite's Muon is the library's
    step exactly; on the CPU it runs float32, and says so."""
    x, y = _batch()
    mine, theirs = _net(), _net()
    opt = build("muon", mine)
    assert opt.hparams["ns_dtype"] == "float32"
    for group in opt.optimizer.param_groups:
        if group["use_muon"]:
            group["ns_dtype"] = torch.bfloat16
    matrices, rest = muon.split(theirs)
    ref = po.Muon(
        [{"params": matrices, "use_muon": True}, {"params": rest, "use_muon": False}],
        lr=1e-3, momentum=0.95, weight_decay=0.1, nesterov=True, ns_steps=5,
        use_adjusted_lr=True, adamw_lr=1e-3, adamw_betas=(0.9, 0.95), adamw_wd=0.1,
        adamw_eps=1e-8,
    )  # fmt: skip
    for _ in range(3):
        _step(opt, mine, x, y)
        _step(ref, theirs, x, y)
    for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_soap_and_kron_modes_are_the_steps_that_refresh_their_preconditioners() -> None:
    x, y = _batch()
    for name, hp, key, refreshing in (
        ("soap", {"precondition_frequency": 3}, "Q", "eigenbasis"),
        ("psgd-kron", {"pre_conditioner_update_probability": 0.5}, "Q", "precondition"),
    ):
        model = _net()
        opt = build(name, model, **hp)
        weight = model[3].weight
        modes, changed = [], []
        for _ in range(9):
            before = [q.clone() for q in opt.optimizer.state[weight].get(key, [])]
            _step(opt, model, x, y)
            after = opt.optimizer.state[weight][key]
            modes.append(opt.mode)
            moved = bool(before) and any(
                not torch.equal(a, b) for a, b in zip(after, before, strict=True)
            )
            changed.append(moved)
        assert [m == refreshing for m in modes] == changed, (name, modes, changed)
        assert 0 < sum(changed) < len(changed), (name, modes)


class _SwitchWorkload:
    """A tiny classification workload that keeps the parameters it saw at each evaluation
    and at each training forward pass."""

    metric_name = "accuracy"
    higher_is_better = True
    data_source = "synthetic"
    data_note = "random points"
    epochs = 2
    batch_size = 16
    target = 2.0  # never reached
    hparams: dict = {}
    reached = Workload.reached

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        self.train_loader = [(self.x[i : i + 16], self.y[i : i + 16], torch.arange(i, i + 16))
                             for i in range(0, 48, 16)]  # fmt: skip
        self.seen: list[tuple[str, torch.Tensor]] = []

    def _params(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.model.parameters()]).clone()

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        self.seen.append(("train", self._params()))
        return model(inputs)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def eval_fn(self, model: nn.Module) -> dict[str, float]:
        self.seen.append(("eval", self._params()))
        return {"accuracy": float((model(self.x).argmax(1) == self.y).float().mean())}


@pytest.mark.parametrize("label, switches", [("sf-adamw", True), ("sgd", False)])
def test_schedule_free_is_evaluated_at_its_average_and_trained_at_its_point(
    tmp_path: Path, label: str, switches: bool
) -> None:
    made: list[_SwitchWorkload] = []

    def factory(name, device, seed, batch_size=None, data_root=None, size="small"):
        made.append(_SwitchWorkload(seed))
        return made[-1]

    spec = CellSpec("switch", label, seed=0, epochs=2, preset="test")
    with RecordWriter(tmp_path / "c.jsonl") as writer:
        assert run_cell(spec, writer, device="cpu", workload_factory=factory)[0] == "finished"
    seen = made[-1].seen
    first_eval = next(i for i, (kind, _) in enumerate(seen) if kind == "eval")
    evaluated, trained_next = seen[first_eval][1], seen[first_eval + 1][1]
    # Schedule-Free evaluates other parameters than it trains on, and returns to them after
    assert torch.equal(evaluated, trained_next) is not switches
    records = read_jsonl(tmp_path / "c.jsonl")
    assert any(r["kind"] == "eval" for r in records)


def test_sf_adamw_runs_a_constant_rate_whatever_the_workloads_schedule() -> None:
    from bench.cell.build import cell_hparams

    class Cosine:
        schedule = {"schedule": "warmup-cosine", "warmup_fraction": 0.05}
        hparams: dict = {}

    hp = cell_hparams(CellSpec("w", "sf-adamw", seed=0), Cosine())
    assert hp["schedule"] == "constant" and hp["warmup_fraction"] == 0.05
    assert cell_hparams(CellSpec("w", "adamw", seed=0), Cosine())["schedule"] == "warmup-cosine"


def test_a_missing_library_is_one_line_saying_what_to_install(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "schedulefree", None)  # as if it were not installed
    with pytest.raises(PluginError, match=r"sf-adamw needs the schedulefree package.*rivals"):
        build("sf-adamw", nn.Linear(2, 2))
    out = tmp_path / "out"
    code = main(["run", "--workload", "mlp-digits", "--optimizer", "sf-adamw", "--epochs", "1",
                 "--max-steps-per-epoch", "1", "--no-overhead", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fngd-bench: "), err
    assert "pip install 'fngd-bench[rivals]'" in err[0]
    assert not out.exists()


def test_each_rival_has_a_search_space_and_tunes(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    code = main(
        ["tune", "--workload", "mlp-digits", "--optimizer", *RIVALS, "--trials", "2",
         "--epochs", "1", "--max-steps-per-epoch", "3", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    best = json.loads((out / "best_hparams.json").read_text())
    studies = best.get("studies", best)
    tuned = {key for key in studies if key.startswith("mlp-digits")}
    assert tuned == {f"mlp-digits__{r}" for r in RIVALS}, studies.keys()
    for key in tuned:
        params = studies[key]["params"]
        assert {"lr", "weight_decay", "warmup_fraction"} <= set(params), params
