"""FNGD in the situations real training code creates: branches, frozen layers, copies, AMP."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from fngd import FNGD
from tests.fngd_reference import block_grad, natural_gradient, per_sample_block_grads, rel_err


def sq(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).flatten(1).sum(1)


class TwoHeads(nn.Module):
    """A shared trunk and two heads; each batch uses one head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 5)
        self.a = nn.Linear(5, 2)
        self.b = nn.Linear(5, 2)
        self.head = "a"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head)(torch.tanh(self.trunk(x)))


@pytest.mark.parametrize("prepare", [True, False])
def test_branch_not_taken_when_ids_were_first_seen_inverts_later(prepare: bool) -> None:
    torch.manual_seed(0)
    model = TwoHeads().double()
    x, y, ids = torch.randn(6, 4).double(), torch.randn(6, 2).double(), torch.arange(6)
    pre = FNGD(model, damping=0.1, share="sample")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        if prepare:
            pre.prepare(sample_ids=ids)
        sq(model(x), y).mean().backward()
        pre.step(sample_ids=ids)

    step()  # head a and the trunk store their coefficients
    model.head = "b"
    step()  # the trunk reuses its own; head b has none yet: it inverts
    assert pre.mode == "inversion"
    assert model.b.weight.grad.abs().sum() > 0
    step()
    assert pre.mode == "weighted_sum"


@pytest.mark.parametrize("prepare", [True, False])
@pytest.mark.parametrize(
    ("new_id", "inverted"), [(4, ["b"]), (6, ["trunk", "b"])], ids=["head-lacks", "all-lack"]
)
def test_mixed_batch_inverts_exactly_the_blocks_lacking_an_id(
    prepare: bool, new_id: int, inverted: list[str]
) -> None:
    """Validity is per block: after head a saw ids 0-4 and head b only 0-3, a head-b batch
    with id 4 inverts head b alone (the trunk reuses its own coefficients), and one with
    the never-stored id 6 inverts the trunk too. Blocks that invert store the whole batch's
    fresh coefficients; the others keep theirs."""
    torch.manual_seed(0)
    model = TwoHeads().double()
    x, y = torch.randn(8, 4).double(), torch.randn(8, 2).double()
    damping = 0.1
    pre = FNGD(model, damping=damping, share="sample")
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    stored: dict[str, dict[int, float]] = {"trunk": {}, "a": {}, "b": {}}

    def grads(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return per_sample_block_grads(model, x[ids], y[ids], sq, ["trunk", model.head])

    def remember(ids: torch.Tensor, g: dict[str, torch.Tensor], names: list[str]) -> None:
        n = len(ids)
        for name in names:
            k = g[name] @ g[name].T + n * damping * torch.eye(n, dtype=x.dtype)
            c = torch.linalg.solve(k, torch.ones(n, dtype=x.dtype))
            stored[name].update(zip(ids.tolist(), c.tolist(), strict=True))

    def step(ids: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        if prepare:
            pre.prepare(sample_ids=ids)
        sq(model(x[ids]), y[ids]).mean().backward()
        pre.step(sample_ids=ids)

    for head, ids, names in (
        ("a", torch.tensor([0, 1, 2, 3]), ["trunk", "a"]),
        ("a", torch.tensor([4]), ["trunk", "a"]),
        ("b", torch.tensor([0, 1, 2, 3]), ["b"]),
    ):
        model.head = head
        remember(ids, grads(ids), names)
        step(ids)
        opt.step()

    ids = torch.tensor([0, 1, 2, new_id])
    g = grads(ids)
    step(ids)
    assert pre.mode == "inversion"
    assert pre.last_solve is not None and len(pre.last_solve.methods) == len(inverted)
    assert model.a.weight.grad is None
    for name in ("trunk", "b"):
        fresh = natural_gradient(g[name], damping)
        got = block_grad(model, name)
        if name in inverted:
            assert rel_err(got, fresh) < 1e-10, name
        else:
            c = torch.tensor([stored[name][i] for i in ids.tolist()], dtype=x.dtype)
            reused = g[name].T @ c
            assert rel_err(reused, fresh) > 1e-3  # reuse and inversion are told apart
            assert rel_err(got, reused) < 1e-10, name
    remember(ids, g, inverted)
    opt.step()

    ids = torch.tensor([new_id, 3])  # every block knows both ids now
    g = grads(ids)
    step(ids)
    assert pre.mode == "weighted_sum"
    for name in ("trunk", "b"):
        c = torch.tensor([stored[name][i] for i in ids.tolist()], dtype=x.dtype)
        assert rel_err(block_grad(model, name), g[name].T @ c) < 1e-10, name


def test_layer_frozen_after_construction_is_left_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    pre = FNGD(model, damping=0.1, share="none")
    for p in model[2].parameters():
        p.requires_grad_(False)
    x, y = torch.randn(5, 4).double(), torch.randn(5, 2).double()
    g = per_sample_block_grads(model, x, y, sq, ["0"])["0"]
    sq(model(x), y).mean().backward()
    pre.step()
    assert model[2].weight.grad is None and model[2].bias.grad is None
    assert rel_err(block_grad(model, "0"), natural_gradient(g, 0.1)) < 1e-10


def test_frozen_bias_is_not_part_of_the_block() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    model[0].bias.requires_grad_(False)
    x, y = torch.randn(6, 4).double(), torch.randn(6, 3).double()
    g = per_sample_block_grads(model, x, y, sq, ["0"])["0"][:, :12]  # weight columns only
    pre = FNGD(model, damping=0.1, share="none", check_finite=True)
    sq(model(x), y).mean().backward()
    pre.step()
    assert model[0].bias.grad is None
    n = g.shape[0]
    want = torch.linalg.solve(g.T @ g / n + 0.1 * torch.eye(12, dtype=g.dtype), g.mean(0))
    assert rel_err(model[0].weight.grad.flatten(), want) < 1e-8


def test_backward_without_step_is_dropped_by_the_next_prepare() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    pre = FNGD(model, damping=0.1, share="sample")
    ids = torch.arange(5)
    for _ in range(3):  # e.g. gradient-norm probes that never step
        model(torch.randn(5, 4).double()).sum().backward()
    pre.prepare(sample_ids=ids)
    assert pre.state is None
    x, y = torch.randn(5, 4).double(), torch.randn(5, 3).double()
    g = per_sample_block_grads(model, x, y, sq, ["0"])["0"]
    sq(model(x), y).mean().backward()  # the probes left no gradient behind either
    pre.step(sample_ids=ids)
    assert pre.mode == "inversion"  # and from this batch alone
    assert rel_err(block_grad(model, "0"), natural_gradient(g, 0.1)) < 1e-10


def test_step_with_other_ids_than_prepared_is_an_error() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    pre = FNGD(model, share="sample")
    ids = torch.arange(5)
    model(torch.randn(5, 4)).sum().backward()
    pre.step(sample_ids=ids)
    pre.prepare(sample_ids=ids)
    model(torch.randn(5, 4)).sum().backward()
    with pytest.raises(RuntimeError, match="other sample_ids"):
        pre.step(sample_ids=ids.flip(0))


def test_copies_of_the_model_train_with_plain_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    plain = copy.deepcopy(model)
    x = torch.randn(5, 4)
    plain(x).sum().backward()
    FNGD(model, share="none")
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buf, weights_only=False)):
        clone(x).sum().backward()
        for p, q in zip(clone.parameters(), plain.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)


def test_autocast_forward_gives_float32_natural_gradients() -> None:
    """bfloat16 autocast: float32 gradients within bfloat16 precision of the float64 ones
    (both phases; a wrong coefficient or scale would be off by far more)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    reference = copy.deepcopy(model).double()
    pre = FNGD(model, damping=0.1, share="sample")
    ids = torch.arange(6)
    c: dict[str, torch.Tensor] = {}
    for want in ("inversion", "weighted_sum"):
        x = torch.randn(6, 4)
        model.zero_grad(set_to_none=True)
        pre.prepare(sample_ids=ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().pow(2).mean().backward()
        pre.step(sample_ids=ids)
        assert pre.mode == want
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
        g = per_sample_block_grads(
            reference, x.double(), torch.zeros(6, 2).double(), sq_mean, ["0", "2"]
        )
        for name in ("0", "2"):
            if want == "inversion":  # the first pass stores c; the second reuses it
                k = g[name] @ g[name].T + 6 * 0.1 * torch.eye(6, dtype=torch.float64)
                c[name] = torch.linalg.solve(k, torch.ones(6, dtype=torch.float64))
            assert rel_err(block_grad(model, name).double(), g[name].T @ c[name]) < 0.03, name


def sq_mean(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample loss of ``((out - y) ** 2).mean()``: each sample's mean over outputs."""
    return ((out - y) ** 2).flatten(1).mean(1)


@pytest.mark.parametrize("case", ["conv2d", "sequence"])
def test_weighted_sum_in_backward_matches_reference(case: str) -> None:
    """The weighted-sum phase, summed inside backward, for Conv2d and sequence inputs."""
    torch.manual_seed(0)
    if case == "conv2d":
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(48, 2)
        ).double()
        x, y, blocks = torch.randn(6, 2, 8, 8), torch.randn(6, 2), ["0", "3"]
    else:
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
        x, y, blocks = torch.randn(6, 7, 5), torch.randn(6, 7, 3), ["0", "2"]
    x, y, ids = x.double(), y.double(), torch.arange(6)
    pre = FNGD(model, damping=0.1, share="sample")
    sq(model(x), y).mean().backward()
    pre.step(sample_ids=ids)
    c = pre.sample_table.values.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    g = per_sample_block_grads(model, x[perm], y[perm], sq, blocks)
    model.zero_grad(set_to_none=True)
    pre.prepare(sample_ids=perm)
    sq(model(x[perm]), y[perm]).mean().backward()
    pre.step(sample_ids=perm)
    assert pre.mode == "weighted_sum"
    for b in pre.blocks:
        assert rel_err(block_grad(model, b.name), g[b.name].T @ c[b.index, perm]) < 1e-8


def test_float32_matches_float64() -> None:
    torch.manual_seed(0)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
        x, y = torch.randn(8, 6).to(dtype), torch.randn(8, 3).to(dtype)
        pre = FNGD(model, damping=0.1, share="none")
        sq(model(x), y).mean().backward()
        pre.step()
        grads[dtype] = torch.cat([p.grad.flatten().double() for p in model.parameters()])
    assert rel_err(grads[torch.float32], grads[torch.float64]) < 1e-4


def test_checkpoint_of_a_model_without_blocks_round_trips() -> None:
    """A model with nothing to precondition still saves and loads its (empty) state."""
    model = nn.Sequential(nn.ReLU())
    pre = FNGD(model, share="sample")
    fresh = FNGD(nn.Sequential(nn.ReLU()), share="sample")
    fresh.load_state_dict(pre.state_dict())
    assert fresh.sample_table.stored_epoch.shape == (0, 0)
