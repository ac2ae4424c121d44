"""``fngd.KFAC`` against a dense float64 reference written from the KFAC formulas.

The reference shares no code with ``fngd.kfac``: it captures layer inputs and output
gradients with ``retain_grad``, builds conv patches by slicing a padded input, and applies
the preconditioner by solving ``(G ⊗ A + damping I) vec(X) = vec(grad)`` densely, which is
what the eigen method computes when the factors are positive definite. Damping may be a
schedule: with eigenvalues pre-divided (``compute_eigenvalue_outer_product=True``) the damping
of the last inverse update is used, otherwise the damping of the current step.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fngd
from fngd import phases
from fngd.kfac import KFAC

DT = torch.float64


# -- the reference ---------------------------------------------------------------------
def conv_patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``(N, S, C*kh*kw)`` patches, features in the weight's ``(C, kh, kw)`` order."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = conv.padding
    xp = F.pad(x, (pw, pw, ph, ph))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = [
        xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]  # each (N, C, oh, ow)
    p = torch.stack(cols, dim=2)  # (N, C, kh*kw, oh, ow)
    return p.permute(0, 3, 4, 1, 2).reshape(x.shape[0], oh * ow, -1)


def batch_factors(module: nn.Module, x: torch.Tensor, g: torch.Tensor):
    """This call's (A, G) under kfac-pytorch's scaling."""
    has_bias = module.bias is not None
    if isinstance(module, nn.Conv2d):
        a = conv_patches(x, module)  # (N, S, K)
        n, s, _ = a.shape
        if has_bias:
            a = torch.cat([a, torch.ones(n, s, 1, dtype=a.dtype)], dim=2)
        a = a.reshape(n * s, -1) / s
        gr = g.permute(0, 2, 3, 1).reshape(n * s, -1) / s
        return torch.einsum("mi,mj->ij", a, a) / (n * s), torch.einsum("mi,mj->ij", gr, gr) / (
            n * s
        )
    a = x.reshape(-1, x.shape[-1])
    if has_bias:
        a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
    gr = g.reshape(-1, g.shape[-1])
    return a.T @ a / a.shape[0], gr.T @ gr / gr.shape[0]


def grad_matrix(module: nn.Module) -> torch.Tensor:
    gw = module.weight.grad.reshape(module.weight.shape[0], -1)
    if module.bias is None:
        return gw.clone()
    return torch.cat([gw, module.bias.grad[:, None]], dim=1)


class Reference:
    """Dense KFAC; ``step(t)`` returns the preconditioned gradient matrices and the scale.

    Also keeps ``undamped``: what the same step would give with the damping left out, so a
    test can show that its damping changes the answer.
    """

    def __init__(self, model, names, *, lr, damping, decay, kl_clip, fus, ius, prediv=True):
        mods = dict(model.named_modules())
        self.mods = {n: mods[n] for n in names}
        self.lr, self.damping, self.decay, self.kl_clip = lr, damping, decay, kl_clip
        self.fus, self.ius, self.prediv = fus, ius, prediv
        self.A: dict = {n: None for n in names}
        self.G: dict = {n: None for n in names}
        self.A_used: dict = {}
        self.G_used: dict = {}
        self.damping_used = 0.0
        self.undamped: dict = {}
        self.calls: dict = {n: [] for n in names}
        for n, m in self.mods.items():
            m.register_forward_hook(self._hook(n))

    def _hook(self, name):
        def hook(module, args, out):
            if module.training and torch.is_grad_enabled():
                out.retain_grad()
                self.calls[name].append((args[0].detach().clone(), out))

        return hook

    def step(self, t):
        if t % self.fus == 0:
            for n, m in self.mods.items():
                pairs = [batch_factors(m, x.to(DT), out.grad.to(DT)) for x, out in self.calls[n]]
                a_new = sum(p[0] for p in pairs) / len(pairs)
                g_new = sum(p[1] for p in pairs) / len(pairs)
                a_old = torch.eye(len(a_new), dtype=DT) if self.A[n] is None else self.A[n]
                g_old = torch.eye(len(g_new), dtype=DT) if self.G[n] is None else self.G[n]
                self.A[n] = self.decay * a_old + (1 - self.decay) * a_new
                self.G[n] = self.decay * g_old + (1 - self.decay) * g_new
        for n in self.mods:
            self.calls[n] = []
        damping_now = self.damping(t) if callable(self.damping) else self.damping
        if t % self.ius == 0:
            self.A_used = {n: a.clone() for n, a in self.A.items()}
            self.G_used = {n: g.clone() for n, g in self.G.items()}
            self.damping_used = damping_now
        damping = self.damping_used if self.prediv else damping_now
        out = {}
        for n, m in self.mods.items():
            grad = grad_matrix(m).to(DT)
            a, g = self.A_used[n], self.G_used[n]
            big = torch.kron(g, a)
            eye = torch.eye(big.shape[0], dtype=DT)
            out[n] = torch.linalg.solve(big + damping * eye, grad.reshape(-1)).reshape(grad.shape)
            self.undamped[n] = torch.linalg.solve(big, grad.reshape(-1)).reshape(grad.shape)
        scale = 1.0
        if self.kl_clip is not None:
            vg = sum((out[n] * grad_matrix(m).to(DT)).sum().item() for n, m in self.mods.items())
            vg *= self.lr**2
            scale = min(1.0, math.sqrt(self.kl_clip / abs(vg)))
        return {n: v * scale for n, v in out.items()}, scale


# -- models ------------------------------------------------------------------------------
class SeqNet(nn.Module):
    """A Linear on ``(N, T, d)`` input, mean-pooled, then a classifier."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.proj(x)).mean(1))


def make(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(
            nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5, bias=False), nn.Tanh(), nn.Linear(5, 3)
        )
        shape: tuple[int, ...] = (16, 6)
    elif kind == "seq":
        model, shape = SeqNet(), (8, 5, 6)
    elif kind in ("cnn", "cnn_dilated"):
        dil = 2 if kind == "cnn_dilated" else 1
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1),
            nn.Tanh(),
            nn.Conv2d(4, 3, 3, padding=dil, dilation=dil, bias=False),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(3 * 5 * 5, 3),
        )
        shape = (4, 2, 9, 9)
    else:
        raise AssertionError(kind)
    return model.to(DT), shape


def batch(shape, t):
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(*shape, dtype=DT, generator=g), torch.randint(0, 3, (shape[0],), generator=g)


def supported(model):
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def run_against_reference(
    kind,
    *,
    steps,
    kl_clip,
    fus=1,
    ius=3,
    hook=False,
    damping=1e-3,
    decay=0.7,
    prediv=True,
):
    """Train ``steps`` steps with ``fngd.KFAC`` and the reference side by side.

    Returns the kl-clip scales, the modes, and the smallest relative change that leaving the
    damping out would have made to a preconditioned gradient.
    """
    model, shape = make(kind)
    pre = KFAC(
        model,
        lr=0.1,
        damping=damping,
        factor_decay=decay,
        kl_clip=kl_clip,
        factor_update_steps=fus,
        inv_update_steps=ius,
        update_factors_in_hook=hook,
        compute_eigenvalue_outer_product=prediv,
        inv_dtype=DT,
    )
    names = supported(model)
    assert list(pre.blocks) == names
    ref = Reference(
        model,
        names,
        lr=0.1,
        damping=damping,
        decay=decay,
        kl_clip=kl_clip,
        fus=fus,
        ius=ius,
        prediv=prediv,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mods = dict(model.named_modules())
    scales, modes = [], []
    damping_effect = math.inf
    for t in range(steps):
        x, y = batch(shape, t)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        raw = {n: grad_matrix(mods[n]) for n in names}
        expected, scale = ref.step(t)
        pre.step()
        scales.append(scale)
        modes.append(pre.mode)
        for n in names:
            got = grad_matrix(mods[n])
            err = (got - expected[n]).norm() / expected[n].norm()
            assert err < 1e-9, (kind, t, n, err.item())
            undamped = ref.undamped[n] * scale
            effect = (undamped - expected[n]).norm() / expected[n].norm()
            damping_effect = min(damping_effect, effect.item())
            # Non-trivial: the result is not a multiple of the raw gradient. (Conv factors
            # are scaled by 1/S^3, so next to the identity start the change is small.)
            r = raw[n].flatten()
            off = got.flatten() - (got.flatten() @ r) / (r @ r) * r
            assert off.norm() / got.norm() > 1e-5, (kind, t, n)
            torch.testing.assert_close(pre.blocks[n].a_factor, ref.A[n], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(pre.blocks[n].g_factor, ref.G[n], rtol=1e-12, atol=1e-14)
        opt.step()
    return scales, modes, damping_effect


# -- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "seq", "cnn", "cnn_dilated"])
def test_matches_reference_kl_clip_active(kind):
    scales, modes, _ = run_against_reference(kind, steps=4, kl_clip=1e-4)
    assert all(s < 0.99 for s in scales), scales
    assert modes == ["inverse", "no_inverse", "no_inverse", "inverse"]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_matches_reference_kl_clip_inactive(kind):
    scales, *_ = run_against_reference(kind, steps=4, kl_clip=1e3)
    assert scales == [1.0] * 4


def test_matches_reference_without_kl_clip():
    scales, *_ = run_against_reference("seq", steps=3, kl_clip=None)
    assert scales == [1.0] * 3


@pytest.mark.parametrize("kind", ["mlp", "seq", "cnn"])
@pytest.mark.parametrize("decay", [0.95, 0.7])
def test_running_average_keeps_decay_of_old_factor(kind, decay):
    """``F <- decay F + (1 - decay) F_batch`` over several updates; at 0.5 a swap would hide."""
    run_against_reference(kind, steps=3, kl_clip=1e-3, decay=decay)


def test_running_average_closed_form_after_two_updates():
    """After two updates ``A = d² I + d (1 - d) A₁ + (1 - d) A₂``, written out by hand."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3)).to(DT)
    d = 0.8
    pre = KFAC(model, factor_decay=d, kl_clip=None, inv_dtype=DT)
    batches = []
    for t in range(2):
        x, y = batch((5, 3), t)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        pre.step()
        a = torch.cat([x, torch.ones(5, 1, dtype=DT)], dim=1)
        batches.append(a.T @ a / 5)
    expected = d * d * torch.eye(4, dtype=DT) + d * (1 - d) * batches[0] + (1 - d) * batches[1]
    torch.testing.assert_close(pre.blocks["0"].a_factor, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["mlp", "seq", "cnn"])
def test_eigenvalues_not_predivided_match_reference(kind):
    """``compute_eigenvalue_outer_product=False`` divides by ``d_G d_Aᵀ + damping`` per step.

    The damping is large enough that leaving it out would move every preconditioned gradient
    by far more than the tolerance.
    """
    *_, effect = run_against_reference(kind, steps=4, kl_clip=1e-3, damping=0.3, prediv=False)
    assert effect > 0.1, effect


@pytest.mark.parametrize("prediv", [True, False])
def test_damping_schedule_per_eigen_path(prediv):
    """Pre-divided eigenvalues keep the damping of the last inverse update; otherwise the
    damping of the current step applies (kfac-pytorch's behaviour in both modes)."""
    *_, effect = run_against_reference(
        "cnn", steps=3, kl_clip=None, ius=3, damping=lambda t: 0.2 * (1 + t), prediv=prediv
    )
    assert effect > 0.1, effect


@pytest.mark.filterwarnings("ignore:inv_update_steps should be a multiple")
def test_factor_and_inverse_schedules():
    """Factors every 2nd step, eigendecompositions every 3rd, over 7 steps."""
    _, modes, _ = run_against_reference("cnn", steps=7, kl_clip=1e-3, fus=2, ius=3)
    assert modes == ["inverse", "no_inverse", "no_inverse"] * 2 + ["inverse"]


def test_factor_updates_happen_only_on_their_steps():
    model, shape = make("mlp")
    pre = KFAC(model, factor_update_steps=2, inv_update_steps=2)
    seen = []
    for t in range(4):
        x, y = batch(shape, t)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        before = pre.blocks["0"].a_factor
        pre.step()
        seen.append(pre.blocks["0"].a_factor is not before)
    assert seen == [True, False, True, False]


def test_stale_eigenbasis_is_used_between_inverse_updates():
    """Recomputing the eigenbasis every step would give a different gradient at step 1."""
    model, shape = make("mlp")
    pre = KFAC(model, inv_update_steps=5, kl_clip=None, inv_dtype=DT)
    other = copy.deepcopy(model)
    fresh = KFAC(other, inv_update_steps=1, kl_clip=None, inv_dtype=DT)
    for t in range(2):
        x, y = batch(shape, t)
        for m, p in ((model, pre), (other, fresh)):
            m.zero_grad()
            F.cross_entropy(m(x), y).backward()
            p.step()
    assert (model[0].weight.grad - other[0].weight.grad).abs().max() > 1e-6


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_factors_in_hook_match_factors_in_step(kind):
    scales, modes, _ = run_against_reference(kind, steps=3, kl_clip=1e-4, hook=True)
    assert modes == ["inverse", "no_inverse", "no_inverse"]


def test_module_called_twice_is_averaged_in_step_mode():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))

    torch.manual_seed(0)
    model = Twice().to(DT)
    pre = KFAC(model, inv_dtype=DT, kl_clip=1e-3, damping=0.01, factor_decay=0.9)
    ref = Reference(
        model, ["lin", "head"], lr=0.1, damping=0.01, decay=0.9, kl_clip=1e-3, fus=1, ius=10
    )
    for t in range(2):
        x, y = batch((8, 4), t)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        expected, _ = ref.step(t)
        pre.step()
        torch.testing.assert_close(grad_matrix(model.lin), expected["lin"], rtol=1e-9, atol=0)
        torch.testing.assert_close(pre.blocks["lin"].a_factor, ref.A["lin"])


def test_skip_layers_by_name_and_class():
    model, shape = make("cnn")
    assert list(KFAC(model, skip_layers=["Conv2d"]).blocks) == ["5"]
    assert list(KFAC(model, skip_layers=[r"^[02]$"]).blocks) == ["5"]
    assert list(KFAC(model, skip_layers="5").blocks) == ["0", "2"]
    model[5].bias.requires_grad_(False)
    assert list(KFAC(model).blocks) == ["0", "2"]


def test_skipped_layer_gradient_is_untouched():
    """A skipped layer keeps its raw gradient and drops out of the kl-clip sum of the rest."""
    model, shape = make("mlp")
    pre = KFAC(model, skip_layers=["^2$"], kl_clip=1e-4, factor_decay=0.7, inv_dtype=DT)
    ref = Reference(
        model, ["0", "4"], lr=0.1, damping=0.003, decay=0.7, kl_clip=1e-4, fus=1, ius=10
    )
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    expected, scale = ref.step(0)
    pre.step()
    assert scale < 0.99
    assert torch.equal(model[2].weight.grad, raw["2.weight"])
    for n in ("0", "4"):
        torch.testing.assert_close(grad_matrix(model[int(n)]), expected[n], rtol=1e-9, atol=0)


def test_state_dict_round_trip_continues_identically():
    def train(model, pre, opt, ts):
        for t in ts:
            x, y = batch(shape, t)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            pre.step()
            opt.step()

    model, shape = make("cnn")
    kw = dict(inv_update_steps=3, kl_clip=1e-3, damping=0.01)
    pre = KFAC(model, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, pre, opt, range(4))  # stops between two inverse updates
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), pre.state_dict()))
    assert saved[2]["steps"] == 4 and set(saved[2]["layers"]) == {"0", "2", "5"}

    model2, _ = make("cnn")
    pre2 = KFAC(model2, inv_update_steps=7, kl_clip=1.0, damping=0.5)  # overwritten by load
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    pre2.load_state_dict(saved[2])
    assert (pre2.steps, pre2.inv_update_steps, pre2.damping) == (4, 3, 0.01)

    train(model, pre, opt, range(4, 8))
    train(model2, pre2, opt2, range(4, 8))
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_without_eigen_recomputes_it():
    model, shape = make("mlp")
    pre = KFAC(model)
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    pre.step()
    state = pre.state_dict()
    for layer in state["layers"].values():
        for key in ("qa", "da", "qg", "dg", "dgda"):
            layer.pop(key)
    pre2 = KFAC(copy.deepcopy(model))
    pre2.load_state_dict(state)
    assert all(b.has_eigen for b in pre2.blocks.values())
    torch.testing.assert_close(pre2.blocks["0"].dgda, pre.blocks["0"].dgda)


def test_memory_usage_counts_factors_and_eigen():
    model, shape = make("cnn")
    pre = KFAC(model, inv_dtype=torch.float32)
    assert pre.memory_usage() == {"factors": 0, "eigen": 0}
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    pre.step()
    dims = [(2 * 9 + 1, 4), (4 * 9, 3), (75 + 1, 3)]  # (A side, G side)
    factors = sum((a * a + g * g) * 8 for a, g in dims)  # float64 factors
    eigen = sum((a * a + g * g + g * a) * 4 for a, g in dims)  # float32 Q_A, Q_G, 1/(dg da+λ)
    assert pre.memory_usage() == {"factors": factors, "eigen": eigen}


def test_phases_are_profiler_events_and_factors_run_outside_backward():
    assert KFAC.phases == phases.KFAC
    model, shape = make("cnn")
    pre = KFAC(model, inv_update_steps=1)
    x, y = batch(shape, 0)

    class Recorder:
        def __init__(self):
            self.stack, self.parents = [], []

        def begin(self, name):
            self.parents.append((name, self.stack[-1] if self.stack else None))
            self.stack.append(name)
            return name

        def end(self, token):
            assert self.stack.pop() == token

    rec = Recorder()
    previous = phases.set_recorder(rec)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with phases.phase("backward"):
                F.cross_entropy(model(x), y).backward()
            pre.step()
    finally:
        phases.set_recorder(previous)
    names = {e.name for e in prof.events()}
    assert set(phases.KFAC) <= names
    assert ("kfac/factors", None) in rec.parents
    assert [n for n, _ in rec.parents] == ["backward", *phases.KFAC]


def test_factors_in_hook_nest_inside_backward():
    model, shape = make("mlp")
    pre = KFAC(model, update_factors_in_hook=True)
    seen = []

    class Recorder:
        def __init__(self):
            self.stack: list[str] = []

        def begin(self, name):
            seen.append((name, self.stack[-1] if self.stack else None))
            self.stack.append(name)
            return name

        def end(self, token):
            self.stack.pop()

    previous = phases.set_recorder(Recorder())
    try:
        x, y = batch(shape, 0)
        with phases.phase("forward"):
            out = model(x)
        with phases.phase("backward"):
            F.cross_entropy(out, y).backward()
        pre.step()
    finally:
        phases.set_recorder(previous)
    assert seen.count(("kfac/factors", "forward")) == 3
    assert seen.count(("kfac/factors", "backward")) == 3
    assert ("kfac/factors", None) not in seen


def test_eval_and_no_grad_forwards_are_ignored():
    model, shape = make("mlp")
    pre = KFAC(model)
    x, _ = batch(shape, 0)
    with torch.no_grad():
        model(x)
    model.eval()
    model(x).sum().backward()
    model.train()
    model.zero_grad()
    pre.step()
    assert all(not b.has_factors for b in pre.blocks.values())


def test_remove_detaches_hooks():
    model, shape = make("mlp")
    pre = KFAC(model)
    pre.remove()
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    raw = model[0].weight.grad.clone()
    pre.step()
    assert pre.blocks["0"].a_factor is None
    assert torch.equal(model[0].weight.grad, raw)


def test_low_precision_model_keeps_float32_factors():
    """bfloat16 activations give float32 factors; the result matches float64 to bf16 precision."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(torch.bfloat16)
    pre = KFAC(model, factor_decay=0.7, damping=0.01)
    ref = Reference(
        model, ["0", "2"], lr=0.1, damping=0.01, decay=0.7, kl_clip=0.001, fus=1, ius=10
    )
    x = torch.randn(16, 6, dtype=torch.bfloat16)
    F.cross_entropy(model(x).float(), torch.randint(0, 3, (16,))).backward()
    expected, _ = ref.step(0)
    pre.step()
    assert pre.blocks["0"].a_factor.dtype == torch.float32
    assert pre.blocks["0"].qa.dtype == torch.float32
    assert model[0].weight.grad.dtype == torch.bfloat16
    for i in (0, 2):
        n = str(i)
        # The float32 factors from bf16 inputs are exact up to float32 rounding.
        torch.testing.assert_close(pre.blocks[n].a_factor.to(DT), ref.A[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pre.blocks[n].g_factor.to(DT), ref.G[n], rtol=1e-5, atol=1e-6)
        got = grad_matrix(model[i]).to(DT)
        err = (got - expected[n]).norm() / expected[n].norm()
        assert err < 2e-2, (n, err.item())


def test_rejects_bad_hyperparameters():
    model, _ = make("mlp")
    with pytest.raises(ValueError, match="damping"):
        KFAC(model, damping=0.0)
    with pytest.raises(ValueError, match="factor_decay"):
        KFAC(model, factor_decay=1.5)
    with pytest.raises(ValueError, match="inv_update_steps"):
        KFAC(model, inv_update_steps=0)
    with pytest.warns(UserWarning, match="multiple"):
        KFAC(model, factor_update_steps=3, inv_update_steps=10)


def test_exported_from_package():
    assert fngd.KFAC is KFAC


# -- damping as FNGD reads it (fngd.damping) ----------------------------------------------
def _kfac_grads(damping, steps=4):
    """Preconditioned gradients of ``steps`` KFAC steps (inverse every other step)."""
    model, shape = make("mlp")
    pre = KFAC(model, damping=damping, kl_clip=None, inv_update_steps=2, inv_dtype=DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out = []
    for t in range(steps):
        x, y = batch(shape, t)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        pre.step()
        out.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    return pre, out


def test_damping_spec_is_its_schedule():
    """``damping="geometric:..."`` is that schedule: the same value at each step, the same
    preconditioned gradients as the ``Geometric`` object and as a plain callable."""
    spec = "geometric:1.0:0.01:3"
    schedule = fngd.damping.Geometric(1.0, 0.01, 3)
    pre, by_spec = _kfac_grads(spec)
    assert pre.damping == pytest.approx(schedule(4))
    _, by_schedule = _kfac_grads(schedule)
    _, by_callable = _kfac_grads(lambda t: 1.0 * (0.01 / 1.0) ** (min(t, 3) / 3))
    for a, b, c in zip(by_spec, by_schedule, by_callable, strict=True):
        assert all(torch.equal(u, v) and torch.equal(u, w) for u, v, w in zip(a, b, c, strict=True))
    _, constant = _kfac_grads(1.0)
    assert not torch.equal(by_spec[-1][0], constant[-1][0])  # the schedule moved the damping


def test_damping_spec_matches_the_reference():
    """With a ``Geometric`` schedule (what the spec resolves to) KFAC is still the dense
    reference at every step (eigenvalues pre-divided: the last inverse update's damping)."""
    run_against_reference("mlp", steps=4, kl_clip=None, ius=2,
                          damping=fngd.damping.parse("geometric:0.5:0.05:3"))


def test_damping_spec_in_the_factory_and_its_record():
    spec = "step:0.1:0.5:10"
    opt = fngd.build("kfac", make("mlp")[0], damping=spec)
    assert opt.hparams["damping"] == spec  # as FNGD's records keep it
    assert opt.preconditioner.damping == pytest.approx(0.1)
    assert fngd.build("kfac", make("mlp")[0], damping=0.01).hparams["damping"] == 0.01
    pre = KFAC(make("mlp")[0], damping=spec)
    assert "damping=step:0.1:0.5:10" in repr(pre)
    pre.damping = "0.25"  # assigned as constructed: through fngd.damping
    assert pre.damping == 0.25


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "-0.5", "nan"])
def test_bad_damping_is_one_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=r"^damping must be finite and > 0, got") as err:
        KFAC(make("mlp")[0], damping=bad)
    assert repr(float(bad)) in str(err.value)


def test_a_schedule_value_is_checked_at_the_step_it_is_asked_for():
    model, shape = make("mlp")
    pre = KFAC(model, damping=lambda t: 0.1 if t == 0 else float("nan"), inv_update_steps=1)
    for t, ok in ((0, True), (1, False)):
        x, y = batch(shape, t)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if ok:
            pre.step()
        else:
            with pytest.raises(ValueError, match=r"^damping must be finite and > 0, got nan"):
                pre.step()
    with pytest.raises(ValueError, match="step 1"):
        pre.damping  # noqa: B018


def test_damping_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="damping"):
        KFAC(make("mlp")[0], damping=[0.1])
