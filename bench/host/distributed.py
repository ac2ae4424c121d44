"""The harness under ``torchrun``: which process this is, its process group, its records.

``torchrun --nproc-per-node K -m bench.cli run ...`` (or ``fngd-bench run --nproc K ...``,
which starts exactly that) runs every cell on K processes at once, the model in
``DistributedDataParallel`` (gloo on the CPU, NCCL on GPUs, one GPU per process):

- the data: each global batch of the workload's batch size is split across the ranks in
  rank order (``TensorLoader.shard``), sample ids stay positions in the training set;
- the records: only rank 0 writes a cell's file; its records carry ``rank`` (0) and
  ``world_size``. Once per epoch the ranks' step times are gathered: a ``step`` record's
  ``seconds`` is the slowest rank's (the step is done when every rank is) and
  ``rank_seconds`` lists every rank's; the epoch's time is the slowest rank's and its train
  loss the mean over ranks. Phase records are rank 0's own;
- the run id gets ``__w<K>``, so runs on 1 and on K processes can share a directory;
- resume: rank 0 decides what to skip or set aside and tells the others. A cell that raises
  ends the run (torchrun then stops every rank), and ``--resume`` reruns it, as an
  interrupted cell in one process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "NullWriter",
    "World",
    "broadcast",
    "finish",
    "gather",
    "merge_timings",
    "start",
    "torchrun_command",
    "world",
]


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes records and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_env(environ: Mapping[str, str] | None = None) -> World:
    """The world ``torchrun`` describes in the environment (one process without it)."""
    env = os.environ if environ is None else environ
    return World(
        rank=int(env.get("RANK", 0)),
        size=int(env.get("WORLD_SIZE", 1)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
    )


def world() -> World:
    """This process's world: the initialised process group's, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), from_env().local_rank)
    return World()


def start(device: str) -> World:
    """Join ``torchrun``'s process group (gloo on the CPU, NCCL on CUDA) if there is one.

    ``device`` is the run's ``--device``: with CUDA each process takes the GPU of its local
    rank. Returns the world (one process when not started by ``torchrun``).
    """
    env = from_env()
    if not env.distributed or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise RuntimeError("this torch has no torch.distributed")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def finish() -> None:
    """Leave the process group (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device, w: World) -> torch.device:
    """The device a rank trains on: its local rank's GPU under CUDA."""
    if w.distributed and device.type == "cuda":
        return torch.device("cuda", w.local_rank)
    return device


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The ``torchrun`` command that runs ``fngd-bench <args>`` on ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "bench.cli",
        *args,
    ]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    w = world()
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def merge_timings(
    records: list[dict[str, Any]], epoch_seconds: float, mean_loss: float
) -> tuple[list[dict[str, Any]], float, float]:
    """One epoch's timer records, epoch time and train loss, merged over the ranks.

    Every rank calls it once per epoch (one ``all_gather``). Step records get ``seconds``
    = the slowest rank's and ``rank_seconds`` = every rank's; their phase times stay this
    rank's. The epoch's time is the slowest rank's, the loss the mean over ranks.
    """
    w = world()
    if not w.distributed:
        return records, epoch_seconds, mean_loss
    steps = [r["seconds"] for r in records if r["kind"] == "step"]
    everyone = gather((steps, epoch_seconds, mean_loss))
    counts = {len(s) for s, _, _ in everyone}
    if len(counts) != 1:
        raise RuntimeError(f"ranks timed different numbers of steps: {sorted(counts)}")
    merged: list[dict[str, Any]] = []
    i = 0
    for r in records:
        if r["kind"] == "step":
            each = [s[i] for s, _, _ in everyone]
            r = {**r, "seconds": max(each), "rank_seconds": each}
            i += 1
        merged.append(r)
    losses = [loss for _, _, loss in everyone]
    return merged, max(e for _, e, _ in everyone), sum(losses) / len(losses)


class NullWriter:
    """What ranks other than 0 write to: nothing (rank 0 writes the cell's records)."""

    def __init__(self) -> None:
        self.base: dict[str, Any] = {}
        self.statuses: list[str] = []
        self.count = 0

    def update_base(self, **fields: Any) -> None:
        self.base.update(fields)

    def write(self, record: Mapping[str, Any], *, flush: bool = False) -> None:
        if record.get("kind") == "cell":
            self.statuses.append(str(record.get("name")))

    def write_many(self, records: Iterable[Mapping[str, Any]], *, flush: bool = False) -> None:
        for record in records:
            self.write(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
