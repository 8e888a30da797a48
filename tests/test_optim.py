import math

import pytest
import torch

from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.optim.build import build_optimizers
from pgolf.optim.muon import Muon
from pgolf.ops.newton_schulz import newton_schulz
from pgolf.optim.schedule import LRSchedule, muon_momentum


def manual_muon(grads, momentum, scale, coefficients="classic", row_normalize=False):
    """One matrix's update sequence, straight from the formula."""
    buf = torch.zeros_like(grads[0])
    updates = []
    for g in grads:
        buf = momentum * buf + g
        u = g + momentum * buf
        if row_normalize:
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        updates.append(newton_schulz(u, 5, coefficients).float() * scale)
    return updates, buf


@pytest.mark.parametrize("row_normalize, wd, coefficients", [(False, 0.0, "classic"), (True, 0.1, "polar_express")])
def test_muon_step_matches_the_formula(row_normalize, wd, coefficients):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16, 8, generator=g)) for _ in range(3)] + [
        torch.nn.Parameter(torch.randn(8, 24, generator=g))]  # a bank of three 16x8 and one 8x24
    start = [p.detach().clone() for p in params]
    opt = Muon(params, lr=0.1, momentum=0.9, coefficients=coefficients, row_normalize=row_normalize, weight_decay=wd)
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(2)]
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt.step()
    for j, p in enumerate(params):
        scale = math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
        updates, _ = manual_muon([gs[j] for gs in grads], 0.9, scale, coefficients, row_normalize)
        expected = start[j]
        for u in updates:
            expected = expected * (1 - 0.1 * wd) - 0.1 * u
        assert torch.allclose(p.detach(), expected, atol=2e-2), j  # bf16 Newton-Schulz


def test_a_3d_bank_parameter_equals_its_stacked_matrices():
    g = torch.Generator().manual_seed(1)
    mats = [torch.nn.Parameter(torch.randn(12, 20, generator=g)) for _ in range(4)]
    bank = torch.nn.Parameter(torch.stack([m.detach().clone() for m in mats]))
    a, b = Muon(mats, lr=0.05, momentum=0.95), Muon([bank], lr=0.05, momentum=0.95)
    for _ in range(3):
        grad = torch.randn(4, 12, 20, generator=g)
        for m, gr in zip(mats, grad):
            m.grad = gr.clone()
        bank.grad = grad.clone()
        a.step()
        b.step()
    assert torch.equal(torch.stack([m.detach() for m in mats]), bank.detach())


def test_parameter_groups_of_the_baseline():
    model = GPT(load_config("baseline", env={}).model)
    optimizers, muon = build_optimizers(model, load_config("baseline", env={}).optim)
    tok, mu, scalars = optimizers
    assert mu is muon and len(muon.param_groups[0]["params"]) == 9 * 6  # q, k, v, proj, fc, mlp proj
    assert len(scalars.param_groups[0]["params"]) == 9 * 4 + 1  # scales, resid_mix, q_gain; + skip_weights
    assert tok.param_groups[0]["params"][0] is model.tok_emb.weight and tok.param_groups[0]["lr"] == 0.05
    owned = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    assert owned == {id(p) for p in model.parameters()}  # every parameter, exactly one optimizer


@pytest.mark.parametrize("wd", [0.0, 0.04])
def test_adam_groups_decay_decoupled(wd):
    """ADAM_WD (the GDN record's AdamW 0.04): with no gradient signal, p <- p·(1 − lr·wd); 0 is plain Adam."""
    cfg = load_config("smoke", ["model.num_layers=1", "model.model_dim=64", f"optim.adam_wd={wd}"], env={})
    model = GPT(cfg.model)
    _, _, scalars = build_optimizers(model, cfg.optim)[0]
    before = [p.detach().clone() for p in scalars.param_groups[0]["params"]]
    for p in scalars.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    scalars.step()
    lr = scalars.param_groups[0]["lr"]
    for b, p in zip(before, scalars.param_groups[0]["params"]):
        torch.testing.assert_close(p.detach(), b * (1 - lr * wd), rtol=0, atol=1e-7)
    assert load_config("gdn", env={}).optim.adam_wd == 0.04


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


def _muon_rank(rank, store, sharded, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        params, per_rank_grads = _muon_problem()
        opt = Muon(params, lr=0.05, momentum=0.9, coefficients="polar_express", row_normalize=True, weight_decay=0.1,
                   sharded=sharded)
        for step in per_rank_grads:
            for p, g in zip(params, step):
                # replicated: DDP would hand every rank the average; sharded: each rank its own gradient
                p.grad = (g[rank] if sharded else g.mean(0)).clone()
            opt.launch_reduce_scatters()
            opt.step()
        out[rank] = {"params": [p.detach().clone() for p in params], "state": opt.gathered_state_dict()["state"]}
    finally:
        dist.destroy_process_group()


def _muon_problem():
    g = torch.Generator().manual_seed(7)
    shapes = [(12, 20)] * 5 + [(20, 12)] * 2 + [(8, 8)]  # 5 is not a multiple of 2: a padded shard
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    grads = [[torch.randn(2, *s, generator=g) for s in shapes] for _ in range(3)]  # [step][param][rank]
    return params, grads


@pytest.mark.parametrize("sharded", [False, True], ids=["replicated", "sharded"])
def test_two_processes_match_one(tmp_path, sharded):
    import torch.multiprocessing as mp

    out = mp.Manager().dict()
    mp.spawn(_muon_rank, args=(str(tmp_path / "store"), sharded, out), nprocs=2)
    params, grads = _muon_problem()
    opt = Muon(params, lr=0.05, momentum=0.9, coefficients="polar_express", row_normalize=True, weight_decay=0.1)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.mean(0).clone()
        opt.step()
    for rank in (0, 1):
        for a, b in zip(out[rank]["params"], params):
            torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-6)
    single_state = opt.gathered_state_dict()["state"]
    for k, v in single_state.items():
        torch.testing.assert_close(out[0]["state"][k]["momentum_full"], v["momentum_full"], rtol=1e-6, atol=1e-6)
