"""The records' optimization (spec §5.8-5.10): per-group AdamW decay by role, Muon's decay at the
scheduled lr, the momentum warmup, the time-fraction warmdown with its floor, and the EMA."""
import pytest
import torch

from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.model.roles import param_roles
from pgolf.optim.build import build_optimizers
from pgolf.optim.ema import WeightEMA
from pgolf.optim.muon import Muon
from pgolf.optim.schedule import LRSchedule, muon_momentum

TINY = ["model.num_layers=1", "model.model_dim=64", "model.vocab_size=128"]


def _decay_only_step(opt: torch.optim.Optimizer) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """One step with zero gradients (Adam's update is then 0): (before, after, lr) per parameter."""
    before = [(p, p.detach().clone(), g["lr"]) for g in opt.param_groups for p in g["params"]]
    for p, _, _ in before:
        p.grad = torch.zeros_like(p)
    opt.step()
    return [(b, p.detach(), lr) for p, b, lr in before]


@pytest.mark.parametrize("tied", [True, False])
def test_embedding_and_other_adam_groups_decay_with_their_own_wd(tied):
    """Spec 5.8: AdamW on the token embedding with embed_wd (0.085), on the rest with adam_wd (0.02);
    the groups come from the roles."""
    cfg = load_config("smoke", [*TINY, f"model.tie_embeddings={tied}", "optim.embed_wd=0.085", "optim.adam_wd=0.02",
                                "model.bigram_buckets=64"], env={})
    model = GPT(cfg.model)
    optimizers, muon = build_optimizers(model, cfg.optim)
    roles = param_roles(model)
    kind = {id(p): roles[n].kind for n, p in model.named_parameters()}
    seen = set()
    for opt in optimizers:
        if opt is muon:
            continue
        for g in opt.param_groups:
            kinds = {kind[id(p)] for p in g["params"]}
            embedding = kinds <= {"embedding", "ngram_table"}
            assert embedding or not kinds & {"embedding", "ngram_table"}, kinds  # never mixed
            assert g["weight_decay"] == (0.085 if embedding else 0.02), kinds
            seen |= kinds
    assert {"embedding", "ngram_table", "control"} <= seen and ("head" in seen) == (not tied)


def test_adamw_decay_is_decoupled_at_the_scheduled_lr():
    cfg = load_config("smoke", [*TINY, "optim.embed_wd=0.085", "optim.adam_wd=0.02"], env={})
    model = GPT(cfg.model)
    optimizers, muon = build_optimizers(model, cfg.optim)
    embed, scalars = optimizers[0], optimizers[-1]
    for opt, wd in ((embed, 0.085), (scalars, 0.02)):
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * 0.5  # as the trainer schedules it
        for before, after, lr in _decay_only_step(opt):
            torch.testing.assert_close(after, before * (1 - lr * wd), rtol=0, atol=1e-7)


def test_muon_decay_uses_the_scheduled_lr():
    """Spec 5.8: p <- p·(1 − lr·wd) with lr the scheduled lr (here base 0.1 at lr_mul 0.3)."""
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(16, 8, generator=g))
    start = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.9, weight_decay=0.095)
    opt.param_groups[0]["lr"] = 0.1 * 0.3
    p.grad = torch.zeros_like(p)  # a zero update: only the decay moves it
    opt.step()
    torch.testing.assert_close(p.detach(), start * (1 - 0.03 * 0.095), rtol=0, atol=1e-6)


def test_muon_momentum_warms_up_linearly_per_step_like_the_record():
    """Spec 5.8: 0.92 -> 0.97 linearly over 1500 optimizer steps (step 0 the first), then 0.97."""
    cfg = load_config("smoke", ["optim.muon_momentum=0.97", "optim.muon_momentum_warmup_start=0.92",
                                "optim.muon_momentum_warmup_steps=1500"], env={}).optim
    assert muon_momentum(0, cfg) == pytest.approx(0.92)
    assert muon_momentum(1, cfg) == pytest.approx(0.92 + 0.05 / 1500)
    assert muon_momentum(750, cfg) == pytest.approx(0.945)
    assert muon_momentum(1500, cfg) == pytest.approx(0.97) == muon_momentum(4900, cfg)
    values = [muon_momentum(s, cfg) for s in range(0, 1501, 100)]
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(s == pytest.approx(steps[0]) for s in steps)  # linear


def _record_schedule(*extra: str) -> LRSchedule:
    cfg = load_config("smoke", ["train.max_wallclock_seconds=600", "train.warmdown=auto", "train.warmdown_iters=0",
                                "train.warmdown_frac=0.85", "train.min_lr=0.1", *extra], env={}).train
    return LRSchedule.from_config(cfg, horizon_ms=600_000 - 500)  # the clock's stop: cap less the 0.5 s reserve


def test_time_fraction_warmdown_with_its_floor_is_the_records():
    """Spec 5.9: frac = elapsed / (cap − reserve); lr_mul = max((1 − frac)/0.85, 0.1) once frac >= 0.15."""
    s = _record_schedule()
    horizon = 599_500.0
    assert s.time_based
    for frac in (0.0, 0.1, 0.15, 0.3, 0.5, 0.8, 0.9, 0.915, 0.95, 1.0, 1.01):
        want = min(1.0, max((1 - frac) / 0.85, 0.1))
        assert s.lr_mul(123, frac * horizon) == pytest.approx(want), frac
    assert s.lr_mul(0, 0.5 * horizon) == s.lr_mul(4000, 0.5 * horizon)  # time, not steps
    assert s.lr_mul(0, 0.9 * horizon) > 0.1 and s.lr_mul(0, 0.916 * horizon) == pytest.approx(0.1)  # floor at 0.915


def test_late_qat_reads_the_warmdown_before_the_floor():
    """The floor holds the LR at min_lr, but QAT's threshold reads the unfloored factor: a threshold
    below min_lr still fires (at frac = 1 − 0.85·0.05), the same position it marks without a floor."""
    s, plain = _record_schedule(), _record_schedule("train.min_lr=0")
    horizon = 599_500.0
    for frac in (0.5, 0.9, 0.95, 0.99):
        assert s.warmdown_mul(0, frac * horizon) == plain.warmdown_mul(0, frac * horizon) == pytest.approx(
            min(1.0, (1 - frac) / 0.85))
    assert s.warmdown_mul(0, 0.96 * horizon) < 0.05 < s.lr_mul(0, 0.96 * horizon)


def test_fraction_warmdown_counts_steps_without_a_cap():
    cfg = load_config("smoke", ["train.max_wallclock_seconds=0", "train.iterations=100", "train.warmdown_iters=0",
                                "train.warmdown_frac=0.5", "train.min_lr=0.2"], env={}).train
    s = LRSchedule.from_config(cfg)
    assert not s.time_based
    assert [s.lr_mul(step, 1e9) for step in (0, 50, 60, 75, 90, 100)] == pytest.approx([1, 1, 0.8, 0.5, 0.2, 0.2])


def test_the_iteration_warmdowns_are_unchanged_and_take_the_floor():
    cfg = load_config("smoke", ["train.iterations=100", "train.warmdown_iters=20"], env={}).train
    s = LRSchedule.from_config(cfg)
    assert [s.lr_mul(step, 0) for step in (0, 80, 90, 100)] == pytest.approx([1, 1, 0.5, 0])
    floored = LRSchedule.from_config(load_config("smoke", ["train.iterations=100", "train.warmdown_iters=20",
                                                           "train.min_lr=0.1"], env={}).train)
    assert [floored.lr_mul(step, 0) for step in (0, 90, 98, 100)] == pytest.approx([1, 0.5, 0.1, 0.1])
    assert floored.warmdown_mul(100, 0) == 0.0


def test_two_warmdowns_are_refused():
    with pytest.raises(PgolfError, match="train.warmdown_frac=0.85 and train.warmdown_iters=1200 are two warmdowns"):
        load_config("baseline", ["WARMDOWN_FRAC=0.85"], env={})
    with pytest.raises(PgolfError, match="train.min_lr must be in"):
        load_config("baseline", ["MIN_LR=1.5"], env={})
    cfg = load_config("baseline", ["WARMDOWN_FRAC=0.85", "WARMDOWN_ITERS=0", "MIN_LR=0.1", "EMA_DECAY=0.9965",
                                   "EMBED_WD=0.085"], env={})
    assert (cfg.train.warmdown_frac, cfg.train.min_lr, cfg.optim.ema_decay, cfg.optim.embed_wd) == (0.85, 0.1, 0.9965,
                                                                                                     0.085)
    with pytest.raises(PgolfError, match="optim.ema_decay must be in"):
        load_config("baseline", ["EMA_DECAY=1"], env={})


def test_ema_averages_every_parameter_in_fp32_from_the_init():
    """Spec 5.10: shadow <- d·shadow + (1 − d)·p per step, from the init, fp32 (a bf16 weight too)."""
    cfg = load_config("smoke", TINY, env={})
    model = GPT(cfg.model)
    model.tok_emb.weight.data = model.tok_emb.weight.data.bfloat16()  # as on CUDA
    init = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    ema = WeightEMA(model, 0.9)
    assert set(ema.shadow) == set(init) and all(t.dtype == torch.float32 for t in ema.shadow.values())
    want = dict(init)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype))
        ema.update()
        want = {n: 0.9 * want[n] + 0.1 * p.detach().float() for n, p in model.named_parameters()}
    for n in want:
        torch.testing.assert_close(ema.shadow[n], want[n], rtol=1e-6, atol=1e-6)
    ema.copy_to_model()
    for n, p in model.named_parameters():
        assert p.dtype == (torch.bfloat16 if n == "tok_emb.weight" else torch.float32)
        assert torch.equal(p.detach(), ema.shadow[n].to(p.dtype))


def test_ema_state_round_trips_and_refuses_another_model():
    cfg = load_config("smoke", TINY, env={})
    model = GPT(cfg.model)
    ema = WeightEMA(model, 0.99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    other = WeightEMA(GPT(cfg.model), 0.99)
    other.load_state_dict(ema.state_dict(), "checkpoint x")
    assert all(torch.equal(other.shadow[n], t) for n, t in ema.shadow.items())
    bigger = WeightEMA(GPT(load_config("smoke", [*TINY, "model.num_layers=2"], env={}).model), 0.99)
    with pytest.raises(PgolfError, match="checkpoint x: field 'ema' does not fit"):
        bigger.load_state_dict(ema.state_dict(), "checkpoint x")
