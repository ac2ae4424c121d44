"""``fngd.KFAC`` against a dense float64 reference written from the KFAC formulas.

The reference shares no code with ``fngd.kfac``: it captures layer inputs and output
gradients with ``retain_grad``, builds conv patches by slicing a padded input, and applies
the preconditioner by solving ``(G ⊗ A + damping I) vec(X) = vec(grad)`` densely, which is
what the eigen method computes when the factors are positive definite.
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
    """Dense KFAC; ``step(t)`` returns the preconditioned gradient matrices and the scale."""

    def __init__(self, model, names, *, lr, damping, decay, kl_clip, fus, ius):
        mods = dict(model.named_modules())
        self.mods = {n: mods[n] for n in names}
        self.lr, self.damping, self.decay, self.kl_clip = lr, damping, decay, kl_clip
        self.fus, self.ius = fus, ius
        self.A: dict = {n: None for n in names}
        self.G: dict = {n: None for n in names}
        self.A_used: dict = {}
        self.G_used: dict = {}
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
                pairs = [batch_factors(m, x, out.grad) for x, out in self.calls[n]]
                a_new = sum(p[0] for p in pairs) / len(pairs)
                g_new = sum(p[1] for p in pairs) / len(pairs)
                a_old = torch.eye(len(a_new), dtype=DT) if self.A[n] is None else self.A[n]
                g_old = torch.eye(len(g_new), dtype=DT) if self.G[n] is None else self.G[n]
                self.A[n] = self.decay * a_old + (1 - self.decay) * a_new
                self.G[n] = self.decay * g_old + (1 - self.decay) * g_new
        for n in self.mods:
            self.calls[n] = []
        if t % self.ius == 0:
            self.A_used = {n: a.clone() for n, a in self.A.items()}
            self.G_used = {n: g.clone() for n, g in self.G.items()}
        out = {}
        for n, m in self.mods.items():
            grad = grad_matrix(m)
            a, g = self.A_used[n], self.G_used[n]
            big = torch.kron(g, a) + self.damping * torch.eye(g.shape[0] * a.shape[0], dtype=DT)
            out[n] = torch.linalg.solve(big, grad.reshape(-1)).reshape(grad.shape)
        scale = 1.0
        if self.kl_clip is not None:
            vg = sum((out[n] * grad_matrix(m)).sum().item() for n, m in self.mods.items())
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


def run_against_reference(kind, *, steps, kl_clip, fus=1, ius=3, hook=False, damping=1e-3):
    model, shape = make(kind)
    hp = dict(lr=0.1, damping=damping, factor_decay=0.5, kl_clip=kl_clip)
    pre = KFAC(
        model,
        factor_update_steps=fus,
        inv_update_steps=ius,
        update_factors_in_hook=hook,
        inv_dtype=DT,
        **hp,
    )
    names = supported(model)
    assert list(pre.blocks) == names
    ref = Reference(
        model, names, lr=0.1, damping=damping, decay=0.5, kl_clip=kl_clip, fus=fus, ius=ius
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mods = dict(model.named_modules())
    scales, modes = [], []
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
            # Non-trivial: the result is not a multiple of the raw gradient. (Conv factors
            # are scaled by 1/S^3, so next to the identity start the change is small.)
            r = raw[n].flatten()
            off = got.flatten() - (got.flatten() @ r) / (r @ r) * r
            assert off.norm() / got.norm() > 1e-5, (kind, t, n)
            torch.testing.assert_close(pre.blocks[n].a_factor, ref.A[n], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(pre.blocks[n].g_factor, ref.G[n], rtol=1e-12, atol=1e-14)
        opt.step()
    return scales, modes


# -- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "seq", "cnn", "cnn_dilated"])
def test_matches_reference_kl_clip_active(kind):
    scales, modes = run_against_reference(kind, steps=4, kl_clip=1e-4)
    assert all(s < 0.99 for s in scales), scales
    assert modes == ["inverse", "no_inverse", "no_inverse", "inverse"]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_matches_reference_kl_clip_inactive(kind):
    scales, _ = run_against_reference(kind, steps=4, kl_clip=1e3)
    assert scales == [1.0] * 4


def test_matches_reference_without_kl_clip():
    scales, _ = run_against_reference("seq", steps=3, kl_clip=None)
    assert scales == [1.0] * 3


@pytest.mark.filterwarnings("ignore:inv_update_steps should be a multiple")
def test_factor_and_inverse_schedules():
    """Factors every 2nd step, eigendecompositions every 3rd, over 7 steps."""
    _, modes = run_against_reference("cnn", steps=7, kl_clip=1e-3, fus=2, ius=3)
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
    scales, modes = run_against_reference(kind, steps=3, kl_clip=1e-4, hook=True)
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
    model, shape = make("mlp")
    pre = KFAC(model, skip_layers=["^2$"], kl_clip=1e-4)
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    pre.step()
    assert torch.equal(model[2].weight.grad, raw["2.weight"])
    assert not torch.allclose(model[0].weight.grad, raw["0.weight"])


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
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(torch.bfloat16)
    pre = KFAC(model)
    x = torch.randn(16, 6, dtype=torch.bfloat16)
    F.cross_entropy(model(x).float(), torch.randint(0, 3, (16,))).backward()
    pre.step()
    assert pre.blocks["0"].a_factor.dtype == torch.float32
    assert pre.blocks["0"].qa.dtype == torch.float32
    assert model[0].weight.grad.dtype == torch.bfloat16
    assert torch.isfinite(model[0].weight.grad.float()).all()


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
