"""Run a function in several processes joined by a gloo process group, bounded in time.

``run_ranks(fn, world_size, args)`` starts ``world_size`` fresh (spawned) processes, joins
them through a file store in a private temporary directory (no port to pick, none to
collide on), calls ``fn(rank, world_size, *args)`` in each and returns the ranks' results
in rank order. A process that raises fails the call with its traceback; one that does not
finish within ``timeout`` seconds is killed, and the call fails saying so. Collectives
time out as well, so a rank left waiting for a peer does not outlive the call.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

#: Seconds a whole multi-process run may take by default (on 2 shared cores: ~10 s).
TIMEOUT = 180.0


def _entry(
    fn: Callable[..., Any], rank: int, world_size: int, root: str, timeout: float, args: tuple
) -> None:
    import torch.distributed as dist

    out = Path(root) / f"rank{rank}"
    try:
        torch.set_num_threads(1)  # two ranks on a 2-core machine: no oversubscription
        dist.init_process_group(
            "gloo",
            init_method=f"file://{root}/store",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        torch.save(result, out.with_suffix(".pt"))
    except BaseException:
        out.with_suffix(".err").write_text(traceback.format_exc())
        raise SystemExit(1) from None


def run_ranks(
    fn: Callable[..., Any],
    world_size: int = 2,
    args: tuple = (),
    *,
    timeout: float = TIMEOUT,
) -> list[Any]:
    """``fn(rank, world_size, *args)`` in ``world_size`` processes; their results by rank."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ranks-") as root:
        procs = [
            ctx.Process(target=_entry, args=(fn, r, world_size, root, timeout, args), daemon=True)
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        late = [r for r, p in enumerate(procs) if p.is_alive()]
        for r in late:
            procs[r].kill()
            procs[r].join()
        errors = [
            f"rank {r}:\n{(Path(root) / f'rank{r}.err').read_text()}"
            for r in range(world_size)
            if (Path(root) / f"rank{r}.err").exists()
        ]
        if errors:
            raise RuntimeError("a rank failed\n" + "\n".join(errors))
        if late:
            raise TimeoutError(f"rank(s) {late} did not finish within {timeout:.0f} s")
        codes = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode != 0}
        if codes:
            raise RuntimeError(f"rank(s) exited with {codes}")
        return [
            torch.load(Path(root) / f"rank{r}.pt", weights_only=False)
            for r in range(world_size)
        ]


def free_port() -> int:
    """A TCP port free on this host now (for a launcher that needs one)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

