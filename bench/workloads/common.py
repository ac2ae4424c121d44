"""Helpers shared by the workload modules: data root, downloads, seeding, evaluation, losses
(batch and per-sample)."""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.workloads.workload import SIZES

#: Environment variable naming the default data directory (else ``./data``).
DATA_ROOT_ENV = "FNGD_BENCH_DATA"
#: Set to ``1`` to skip every download attempt (workloads then use what is on disk or fall
#: back to synthetic data).
OFFLINE_ENV = "FNGD_BENCH_OFFLINE"
#: Seconds a download waits to connect or for the next chunk before giving up.
DOWNLOAD_TIMEOUT = 15.0
#: Environment variable naming where generated data sets are kept between processes (else
#: ``$XDG_CACHE_HOME/fngd-bench``, else ``~/.cache/fngd-bench``); ``off`` keeps nothing.
CACHE_ENV = "FNGD_BENCH_CACHE"


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """``data_root``, else ``$FNGD_BENCH_DATA``, else ``./data``."""
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV, "./data")
    return Path(data_root)


def cache_dir() -> Path | None:
    """Where generated data sets are kept (:data:`CACHE_ENV`), or None when switched off."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fngd-bench"


def cached_arrays(key: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``make()``, kept as ``<cache>/<key>.npz`` so that a later process reads it instead of
    generating it again (a generator that takes tens of seconds, every process). ``key`` must
    name everything the arrays depend on. A cache that cannot be written is left alone."""
    folder = cache_dir()
    path = folder / f"{key}.npz" if folder is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as held:
                return {name: held[name] for name in held.files}
        except (OSError, ValueError):  # a damaged file: generate it again
            pass
    arrays = make()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
            np.savez(partial, **arrays)
            os.replace(partial, path)  # whole or absent: concurrent processes never see half
        except OSError:
            pass
    return arrays


def downloads_allowed() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes")


def require_downloads() -> None:
    """Raise ``RuntimeError`` if ``$FNGD_BENCH_OFFLINE`` disables downloads."""
    if not downloads_allowed():
        raise RuntimeError(f"downloads disabled by {OFFLINE_ENV}=1")


def download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Fetch ``url`` to ``dest`` (via a ``.part`` file, so a failed download leaves nothing).

    ``timeout`` bounds the connection and each read, not the whole transfer. Raises whatever
    urllib raises; callers turn failures into a synthetic fallback.
    """
    require_downloads()
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "fngd-bench"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server has answered
        try:
            with open(part, "wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
            part.replace(dest)
        finally:
            if part.exists():
                part.unlink()
    return dest


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return size


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block without disturbing the caller's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(factory: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """Initialise a model deterministically (on CPU, from ``seed``) and move it to ``device``."""
    with seeded(seed):
        model = factory()
    return model.to(device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` inside the block; restores the previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def holdout(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train positions, validation positions)``: a fixed random ``fraction`` of ``n``
    training samples held out for validation (the same for every run seed)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch (the classification workloads' ``loss_fn``)."""
    return nn.functional.cross_entropy(outputs, targets)


def per_sample_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sample's cross-entropy (N,): its mean is ``cross_entropy`` (``PER_SAMPLE``)."""
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def per_sample_token_loss(
    outputs: torch.Tensor, targets: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Per-sample losses (N,) of a loss averaged over all non-ignored tokens of a batch.

    ``outputs`` (N, T, V), ``targets`` (N, T). Sample i's loss is its tokens' loss sum over
    the batch's mean token count (``bench.workloads.workload.PER_SAMPLE``), so the mean over
    samples is the token mean, and FNGD's ``loss_reduction="mean"`` reads it as it reads
    the token-mean loss.
    """
    tokens = nn.functional.cross_entropy(
        outputs.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=ignore_index,
        reduction="none",
    ).view(targets.shape)
    count = (targets != ignore_index).sum().clamp(min=1)
    return tokens.sum(dim=1) * (targets.shape[0] / count)


def classification_eval(
    forward: Callable[[nn.Module, Any], torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
) -> Callable[[nn.Module], dict[str, float]]:
    """An ``eval_fn`` reporting mean cross-entropy and top-1 accuracy over ``(X, y)``."""

    def eval_fn(model: nn.Module) -> dict[str, float]:
        with eval_mode(model):
            loss_sum = torch.zeros((), dtype=torch.float64, device=X.device)
            correct = torch.zeros((), dtype=torch.int64, device=X.device)
            for start in range(0, len(y), batch_size):
                xb, yb = X[start : start + batch_size], y[start : start + batch_size]
                out = forward(model, xb).float()
                loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").double()
                correct += (out.argmax(dim=1) == yb).sum()
            n = max(len(y), 1)
            return {"eval_loss": loss_sum.item() / n, "accuracy": correct.item() / n}

    return eval_fn
