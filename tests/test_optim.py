import math

import pytest
import torch

from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.optim.build import build_optimizers
from pgolf.optim.muon import Muon
from pgolf.optim.newton_schulz import newton_schulz
from pgolf.optim.schedule import LRSchedule, muon_momentum


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (64, 64)])
def test_newton_schulz_approximately_orthogonalises(shape):
    gen = torch.Generator().manual_seed(0)
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=gen, dtype=torch.float64), full_matrices=False)
    # Condition number 20: five quintic steps lift singular values down to ~1/20 of the largest into the band.
    g = u @ torch.diag(torch.linspace(0.05, 1.0, min(shape), dtype=torch.float64)) @ vh
    x = newton_schulz(g).double()
    assert x.shape == g.shape
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.5 and s.max() < 1.3, s  # the quintic's band, not exactly 1
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = (x * (u @ vh)).sum() / (x.norm() * (u @ vh).norm())
    assert cos > 0.95  # and it points along the polar factor U Vᵀ


def test_muon_step_matches_the_formula():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(16, 8))
    p0 = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.9)
    grads = [torch.randn(16, 8) for _ in range(2)]
    buf = torch.zeros(16, 8)
    expected = p0.clone()
    for g in grads:
        p.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + g
        update = newton_schulz(g + 0.9 * buf).float() * math.sqrt(16 / 8)
        expected -= 0.1 * update
    assert torch.allclose(p.detach(), expected, atol=1e-2)  # bf16 updates
    assert torch.allclose(opt.state[p]["momentum_buffer"], buf)


def test_parameter_groups_of_the_baseline():
    model = GPT(load_config("baseline", env={}).model)
    optimizers, muon = build_optimizers(model, load_config("baseline", env={}).optim)
    tok, mu, scalars = optimizers
    assert mu is muon and len(muon.param_groups[0]["params"]) == 9 * 6  # q, k, v, proj, fc, mlp proj
    assert len(scalars.param_groups[0]["params"]) == 9 * 4 + 1  # scales, resid_mix, q_gain; + skip_weights
    assert tok.param_groups[0]["params"][0] is model.tok_emb.weight and tok.param_groups[0]["lr"] == 0.05
    owned = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    assert owned == {id(p) for p in model.parameters()}  # every parameter, exactly one optimizer


def test_step_based_warmdown_and_warmup():
    cfg = load_config("smoke", ["train.iterations=100", "train.warmdown_iters=20", "train.lr_warmup_steps=10"], env={}).train
    s = LRSchedule.from_config(cfg)
    assert not s.time_based
    assert s.lr_mul(0, 0) == pytest.approx(0.1) and s.lr_mul(9, 0) == 1.0 and s.lr_mul(50, 0) == 1.0
    assert s.lr_mul(80, 0) == 1.0 and s.lr_mul(90, 0) == pytest.approx(0.5) and s.lr_mul(100, 0) == 0.0


def test_time_based_warmdown_like_the_baseline():
    cfg = load_config("baseline", env={}).train  # 600 s cap, warmdown_iters 1200
    s = LRSchedule.from_config(cfg)
    assert s.time_based
    # at 50 ms/step the warmdown window is 1200 * 50 ms = 60 s before the cap
    assert s.lr_mul(1000, 50_000) == 1.0
    assert s.lr_mul(11_000, 550_000) == pytest.approx(50 / 60)
    assert s.lr_mul(12_000, 600_000) == 0.0
    with pytest.raises(PgolfError, match="needs a wallclock cap"):
        LRSchedule.from_config(load_config("smoke", ["train.warmdown=time"], env={}).train)


def test_muon_momentum_warmup():
    cfg = load_config("baseline", env={}).optim
    assert muon_momentum(0, cfg) == pytest.approx(0.85)
    assert muon_momentum(250, cfg) == pytest.approx(0.90)
    assert muon_momentum(500, cfg) == pytest.approx(0.95) == muon_momentum(5000, cfg)
