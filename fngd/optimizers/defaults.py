"""Default hyperparameters, from the literature, in one readable place.

- SGD: momentum 0.9, weight decay 5e-4 (the usual CIFAR ResNet recipe).
- AdamW: torch.optim.AdamW's own defaults.
- KFAC: kfac-pytorch's CIFAR-10 ResNet example (damping 0.003, factor_decay 0.95,
  kl_clip 0.001, factor_update_steps 1, inv_update_steps 10) on top of that SGD.
- FNGD / NGD: the same SGD for the update; damping 1e-3 for the N x N solve (a float or a
  schedule spec, ``fngd.damping``), per layer (``scope``), a constant shift, coefficients
  not normalised, no loss scale (``grad_scaler``: recorded by its type's name). The
  per-step finite check of the weighted-sum phase is ``FNGD``'s own default
  (``fngd.preconditioner.CHECK_FINITE``, off: on a GPU it would add a host synchronisation
  per step that SGD does not pay; the runner detects divergence from the loss instead, and
  the inversion phase always checks). Under DDP the global batch's Gram
  (``distributed="global"``: the same steps as one process on the concatenated batch).

A workload may override any of these (``Workload.hparams``); what was used is recorded.
"""

from __future__ import annotations

from typing import Any

from fngd.preconditioner import CHECK_FINITE

SGD: dict[str, Any] = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}

ADAMW: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 1e-2,
}

KFAC: dict[str, Any] = {
    **SGD,
    "impl": "builtin",
    "damping": 0.003,
    "factor_decay": 0.95,
    "kl_clip": 0.001,
    "factor_update_steps": 1,
    "inv_update_steps": 10,
    "skip_layers": [],
    # kfac-pytorch's own settings (its distributed ones: grad_worker_fraction, ...), passed
    # through to it as they are; impl "kfac-pytorch" only
    "kfac_pytorch_options": {},
}

FNGD: dict[str, Any] = {
    **SGD,
    "damping": 1e-3,
    "share": "sample",
    "scope": "layer",
    "damping_mode": "constant",
    "normalize": False,
    "grad_scaler": None,
    "refresh_epochs": None,
    "steps_per_epoch": None,
    "loss_reduction": "mean",
    "gram": "auto",
    "skip_layers": [],
    "check_finite": CHECK_FINITE,
    # under DistributedDataParallel: the global batch's Gram ("global") or each rank's own
    # ("local"); see fngd.preconditioner.FNGD
    "distributed": "global",
    # layer scope's weighted sum through compiled blocks where they build; see
    # fngd.blocks.native (records keep "on" or "off": what ran)
    "native": "auto",
}

NGD: dict[str, Any] = {k: v for k, v in FNGD.items() if k not in ("share", "refresh_epochs")}

DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": SGD,
    "adamw": ADAMW,
    "kfac": KFAC,
    "ngd": NGD,
    "fngd": FNGD,
}
