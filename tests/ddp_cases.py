"""Two-process training runs and their one-process references, for ``tests/test_distributed.py``.

Every run trains the same tiny float64 model (two Linear blocks and a LayerNorm, whose
parameters are no block's) on the same 16 samples in global batches of 8 for 3 epochs: epoch
0 inverts, epochs 1 and 2 reuse. Each epoch draws a fresh order, and rank r takes the r-th
contiguous part of each global batch, so later epochs hand each rank samples the other rank
inverted. ``ranks_main`` runs every case under ``DistributedDataParallel`` in each rank
(started by ``tests.spawn.run_ranks``); the ``reference_*`` functions compute what one
process gives on the concatenated batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fngd.optimizers import BenchOptimizer, build

N_SAMPLES, GLOBAL_BATCH, EPOCHS = 16, 8, 3
STEPS_PER_EPOCH = N_SAMPLES // GLOBAL_BATCH
FNGD_HP = dict(
    lr=0.2, momentum=0.9, weight_decay=0.0, damping=0.05, steps_per_epoch=STEPS_PER_EPOCH
)

#: name -> (factory name, hyperparameters, reweighted step)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "layer": ("fngd", {}, False),
    "network-reweighted": ("fngd", {"scope": "network"}, True),
    "network-explicit": ("fngd", {"scope": "network", "gram": "explicit"}, False),
    "layer-iteration": ("fngd", {"share": "iteration"}, False),
    "ngd": ("ngd", {}, False),
    "local-layer": ("fngd", {"distributed": "local"}, False),
    "local-network": ("fngd", {"distributed": "local", "scope": "network"}, True),
}
PLAIN = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3},
    "adamw": {"lr": 0.01},
}
KFAC_HP = dict(
    lr=0.1, damping=0.01, factor_decay=0.9, kl_clip=0.01, inv_update_steps=2, momentum=0.0
)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N_SAMPLES, 5, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (N_SAMPLES,), generator=g
    )


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 3)).double()


def global_batches() -> Iterator[tuple[int, torch.Tensor]]:
    """``(epoch, ids)`` of every global batch, in training order."""
    for epoch in range(EPOCHS):
        order = torch.randperm(N_SAMPLES, generator=torch.Generator().manual_seed(100 + epoch))
        for b in range(STEPS_PER_EPOCH):
            yield epoch, order[b * GLOBAL_BATCH : (b + 1) * GLOBAL_BATCH]


def shard(ids: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return torch.tensor_split(ids, world)[rank]


def make(name: str, module: nn.Module, hp: dict[str, Any]) -> BenchOptimizer:
    """The factory's optimiser; KFAC built here with a float64 inverse (exact comparisons)."""
    if name != "kfac":
        return build(name, module, **hp)
    from fngd.kfac import KFAC

    kfac_hp = {k: v for k, v in hp.items() if k != "momentum"}
    pre = KFAC(module, inv_dtype=torch.float64, **kfac_hp)
    sgd = torch.optim.SGD(module.parameters(), lr=hp["lr"], momentum=hp["momentum"])
    return BenchOptimizer("kfac", sgd, impl="builtin", preconditioner=pre)


def train_step(opt: BenchOptimizer, forward: nn.Module, ids: torch.Tensor, reweighted: bool) -> Any:
    """One step on samples ``ids``; this rank's gradients after the preconditioner, flat."""
    x, y = data()
    opt.zero_grad()
    opt.prepare(sample_ids=ids)
    reweight = reweighted and opt.reweight(ids)
    losses = F.cross_entropy(forward(x[ids]), y[ids], reduction="none")
    (opt.reweighted_loss(losses) if reweight else losses.mean()).backward()
    if opt.preconditioner is not None:
        opt.preconditioner.step(sample_ids=ids)
    grads = torch.cat([p.grad.flatten() for p in opt.optimizer.param_groups[0]["params"]])
    opt.optimizer.step()
    return grads.clone()


def _params(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()]).clone()


# -- under DDP, in each rank -------------------------------------------------------------


def _ddp(module: nn.Module) -> tuple[nn.Module, list[int]]:
    """``module`` in DDP, with a communication hook counting DDP's all-reduces."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(module)
    calls = [0]

    def counting(state, bucket):  # unannotated: DDP checks a hook's annotations
        calls[0] += 1
        return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting)
    return ddp, calls


def _run(
    name: str, hp: dict[str, Any], reweighted: bool, rank: int, world: int
) -> dict[str, Any]:
    ddp, hook_calls = _ddp(model())
    opt = make(name, ddp, hp)
    pre = opt.preconditioner
    comm = getattr(pre, "comm", None)
    steps = []
    for epoch, ids in global_batches():
        mine = shard(ids, rank, world)
        hooks, sent = hook_calls[0], (comm.collectives if comm is not None else 0)
        grads = train_step(opt, ddp, mine, reweighted)
        steps.append(
            {
                "epoch": epoch,
                "ids": mine,
                "grads": grads,
                "mode": opt.mode,
                "ddp_allreduces": hook_calls[0] - hooks,
                "own_collectives": (comm.collectives if comm is not None else 0) - sent,
                "sync_after": ddp.require_backward_grad_sync,
            }
        )
    out: dict[str, Any] = {"steps": steps, "params": _params(ddp.module)}
    if pre is not None and hasattr(pre, "sample_table"):
        out["table"] = pre.sample_table.state_dict()
        out["counts"] = dict(pre.counts)
    return out


def _without_prepare(rank: int, world: int) -> str:
    ddp, _ = _ddp(model())
    opt = build("fngd", ddp, **FNGD_HP)
    x, y = data()
    ids = shard(torch.arange(GLOBAL_BATCH), rank, world)
    F.cross_entropy(ddp(x[ids]), y[ids]).backward()
    try:
        opt.step(sample_ids=ids)
    except RuntimeError as exc:
        return str(exc)
    return ""


def ranks_main(rank: int, world: int) -> dict[str, Any]:
    """Every case under DDP in this rank: name -> what ``_run`` records."""
    results: dict[str, Any] = {}
    for case, (name, hp, reweighted) in CASES.items():
        results[case] = _run(name, {**FNGD_HP, **hp}, reweighted, rank, world)
    for name, hp in PLAIN.items():
        results[name] = _run(name, hp, False, rank, world)
    results["kfac"] = _run("kfac", KFAC_HP, False, rank, world)
    results["without-prepare"] = _without_prepare(rank, world)
    return results


# -- one process -------------------------------------------------------------------------


def reference(name: str, hp: dict[str, Any], reweighted: bool) -> dict[str, Any]:
    """One process on the concatenated global batches: gradients per step, final weights."""
    m = model()
    opt = make(name, m, hp)
    grads = [train_step(opt, m, ids, reweighted) for _, ids in global_batches()]
    return {"grads": grads, "params": _params(m)}


def reference_local(
    name: str, hp: dict[str, Any], reweighted: bool, world: int
) -> dict[str, Any]:
    """``distributed="local"`` in one process.

    Epoch 0: the mean over ranks of one-process FNGD on each rank's part (a fresh solve on
    each); every id's stored coefficient is its part's solve over the world size. Later
    epochs: one-process FNGD on the concatenated batches with those coefficients stored.
    """
    hp = {k: v for k, v in hp.items() if k != "distributed"}
    m = model()
    opt = build("sgd", m, lr=hp["lr"], momentum=hp["momentum"], weight_decay=0.0)
    grads: list[torch.Tensor] = []
    stored: dict[int, torch.Tensor] = {}  # id -> its coefficient per table row
    later: BenchOptimizer | None = None
    for epoch, ids in global_batches():
        if epoch == 0:
            parts = []
            for r in range(world):
                part = shard(ids, r, world)
                copy_ = copy.deepcopy(m)
                fngd = build(name, copy_, **hp)
                parts.append(train_step(fngd, copy_, part, False))
                c, _ = fngd.preconditioner.sample_table.lookup(part, 0)
                stored.update(zip(part.tolist(), (c / world).T, strict=True))
            mean = torch.stack(parts).mean(0)
            _set_grads(m, mean)
            opt.optimizer.step()
            grads.append(mean)
            continue
        if later is None:
            later = build(name, m, **hp)
            later.optimizer.load_state_dict(opt.optimizer.state_dict())
            table = later.preconditioner.sample_table
            ids_all = torch.tensor(sorted(stored))
            c = torch.stack([stored[i] for i in ids_all.tolist()], dim=1)
            table.store(ids_all, c, 0, list(range(table.num_blocks)))
        grads.append(train_step(later, m, ids, reweighted))
    return {"grads": grads, "params": _params(m)}


def _set_grads(m: nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    for p in m.parameters():
        k = p.numel()
        p.grad = flat[offset : offset + k].view_as(p).clone()
        offset += k


Reference = Callable[..., dict[str, Any]]
