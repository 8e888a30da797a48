"""train.loader (stream | packed) and train.seq_schedule in the trainer, on a CPU (issue 14.2).

Packed training needs document-isolated attention that trains on the device; none of pgolf's
backends trains on a CPU (flex: no CPU backward; flash: CUDA), so the packed runs here swap
in the dense-mask SDPA reference of tests/attention_reference.py (`dense_attention`); the
product refuses packed on a CPU (test_packed_on_a_cpu_is_refused_clearly).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attention_reference import DenseReference
from conftest import tiny_config, train_losses
from pgolf.config import load_config
from pgolf.data import shards
from pgolf.data.packing import build_cu_seqlens
from pgolf.distributed import DistEnv, init_distributed, shutdown
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.model.attention_backends import SDPACausal
from pgolf.train import feed as feed_module
from pgolf.train.clock import Clock
from pgolf.train.feed import TrainFeed
from pgolf.train.trainer import Trainer, run_training
from test_packing_loader import _reference_segments, _reference_steps

PACKED = ("train.loader=packed", "model.doc_isolation=true")
CPU = torch.device("cpu")


@pytest.fixture
def dense_attention(monkeypatch):
    """Models built from here on attend with the dense document mask (it trains on a CPU)."""
    monkeypatch.setattr("pgolf.model.gpt.choose_backend",
                        lambda name, doc_isolation: DenseReference() if doc_isolation else SDPACausal())


def _events(run_dir, kind=None) -> list[dict]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e for e in events if kind is None or e["event"] == kind]


# -- the model's cu_seqlens path ------------------------------------------------------------

def _packed_model(backend):
    cfg = load_config("smoke", ["model.num_layers=2", "model.model_dim=64", "model.doc_isolation=true",
                                "model.smear_gate=true", "model.smear_form=input_gated", "model.bigram_buckets=64",
                                "model.attention.rope_dims=8"], env={}).model
    torch.manual_seed(0)
    model = GPT(cfg)
    for p in model.parameters():  # away from the identity-at-init, so every path matters
        p.data.add_(0.05 * torch.randn_like(p))
    model.attention_backend = backend
    for block in model.blocks:
        block.mixer.backend = backend
    return model


def _packed_row():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(2, 1024, (1, 201), generator=g)
    x[0, [0, 37, 120]] = 1  # BOS: documents [0,37) [37,120) [120,200)
    cu, n = build_cu_seqlens(np.array([0, 37, 120]), 200, 50, bucket=8)
    return x[:, :-1], x[:, 1:], torch.from_numpy(cu), cu[:n + 1].tolist()


def _per_segment(model, x, y, bounds, reduction="none"):
    """Each segment as a row of its own: what a packed row must equal."""
    return [model(x[:, a:b], y[:, a:b], reduction=reduction) for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("backend", [DenseReference(), "flex"])
def test_a_packed_row_scores_each_segment_as_if_it_were_alone(backend):
    """The loader's cu_seqlens (documents cut every 50 tokens, padded) isolate attention, SmearGate
    and the n-gram hashes exactly like separate rows; flex runs its (CPU) forward only."""
    from pgolf.model.attention_backends import FlexDocument

    model = _packed_model(FlexDocument() if backend == "flex" else backend)
    x, y, cu, bounds = _packed_row()
    assert bounds == [0, 37, 87, 120, 170, 200] and cu.numel() == 8
    with torch.no_grad():
        packed = model(x, y, reduction="none", cu_seqlens=cu, max_seqlen=50)
        alone = torch.cat(_per_segment(model, x, y, bounds))
        by_bos = model(x, y, reduction="none")  # found at BOS only: the 50-token cuts are not there
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(by_bos, packed, atol=1e-4)


def test_the_packed_backward_equals_the_per_segment_backward():
    model = _packed_model(DenseReference())
    x, y, cu, bounds = _packed_row()
    model(x, y, reduction="sum", cu_seqlens=cu, max_seqlen=50).backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(_per_segment(model, x, y, bounds, reduction="sum")).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(packed[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_cu_seqlens_need_document_isolation():
    model = GPT(load_config("smoke", ["model.num_layers=1", "model.model_dim=64"], env={}).model)
    x, y, cu, _ = _packed_row()
    with pytest.raises(ValueError, match="without model.doc_isolation"):
        model(x, y, cu_seqlens=cu)


# -- the feed ---------------------------------------------------------------------------------

def test_packed_rows_cover_the_tokens_each_rank_should_see(tmp_path, tiny_data):
    """Two ranks' rows through the trainer's feed: each rank its own span of the step's slice, the
    ranks together the whole slice in the spec's order, documents cut at the active length."""
    cfg = tiny_config(tiny_data, tmp_path, *PACKED, "train.batch_tokens=2048", "train.seq_schedule=32@0.5,64@1.0")
    feeds = [TrainFeed.from_config(cfg, DistEnv(r, 2, r, CPU), 1024, 1, 1, DenseReference()) for r in (0, 1)]
    local = 1024
    data, expected = _reference_steps(shards.list_token_shards(tiny_data[0], "train"), 2, local, 12)
    for step, (idx, start) in enumerate(expected):
        seq_len = 32 if step <= 6 else 64  # progress 0.5 is still the first stage
        rows = []
        for f in feeds:
            assert f.advance(step, step / 12).seq_len == seq_len
            b = f.next_batch()
            x = b.inputs[0].numpy()
            assert b.inputs.shape == b.targets.shape == (1, local) and b.max_seqlen == seq_len
            assert torch.equal(b.inputs[0, 1:], b.targets[0, :-1])
            ref = _reference_segments(x, seq_len)
            cu = b.cu_seqlens.tolist()
            assert cu[:len(ref)] == ref and set(cu[len(ref):]) == {local} and len(cu) % 64 == 0
            rows.append(np.append(x, b.targets[0, -1].item()))
        assert np.array_equal(np.concatenate(rows), data[idx][start:start + 2 * (local + 1)])


def test_the_feed_refuses_a_crafted_state(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path, *PACKED, "train.seq_schedule=32@0.5,64@1.0")
    f = TrainFeed.from_config(cfg, DistEnv(0, 1, 0, CPU), 1024, 1, 1, DenseReference())
    good = f.state_dict()
    assert good["seq_len"] == 32 and good["rewarm_from"] is None and good["kind"] == "document_packing"
    for change, message in [({"seq_len": 48}, "seq_len=48 is not a length of this run's schedule"),
                            ({"rewarm_from": -3}, "rewarm_from=-3 must be null"),
                            ({"shard": 99}, "shard=99 cursor=-1 is outside the train shards"),
                            ({"cursor": 10**9}, "is outside the train shards"),
                            ({"world": 4}, "field 'world' does not match")]:
        with pytest.raises(PgolfError, match=message):
            f.load_state_dict({**good, **change}, "ckpt")
    f.load_state_dict({k: v for k, v in good.items() if k not in ("seq_len", "rewarm_from")}, "old")
    assert f.state == f.schedule.start()  # written before the schedule: its start


@pytest.mark.parametrize("overrides, message", [
    (PACKED, "resolves to flex on cpu, which cannot train there .*no pgolf attention backend trains it on a CPU"),
    (("train.loader=packed",), "set model.doc_isolation=true"),
    (("train.seq_schedule=32@0.5,128@1.0",), "longest length 128 must equal train.seq_len=64"),
    (("train.seq_schedule=48@0.5,64@1.0",), r"lengths \[48\] do not divide the 1024 tokens per rank"),
    (("train.seq_schedule=32,64@1.0",), "train.seq_schedule='32,64@1.0': .*expected LEN@FRACTION"),
])
def test_bad_feed_settings_fail_before_the_run_starts(tmp_path, tiny_data, overrides, message):
    with pytest.raises(PgolfError, match=message):
        run_training(tiny_config(tiny_data, tmp_path, *overrides))
    assert not (tmp_path / "t").exists()  # nothing left behind


# -- the schedule in real runs ----------------------------------------------------------------

class StepClock(Clock):
    """Training time advances 50 ms per optimizer step, whatever the CPU does."""

    ms_per_step = 50.0
    trainer = None

    def running_ms(self) -> float:
        return self.trainer.step * self.ms_per_step


def _run_with_step_clock(cfg, rows: list):
    env = init_distributed(cfg.run.device)
    try:
        trainer = Trainer(cfg, env, "run")
        c = trainer.clock
        trainer.clock = StepClock(c.cap_ms, c.reserve_ms, c.eval_budget_ms, c.env)
        trainer.clock.trainer = trainer
        take = trainer.loader.next_batch

        def next_batch():  # notes each micro-batch's row shape
            batch = take()
            rows.append((trainer.step, tuple(batch.inputs.shape)))
            return batch

        trainer.loader.next_batch = next_batch
        return trainer.run()
    finally:
        shutdown()


def test_the_schedule_switches_at_its_fractions_of_cap_minus_reserve(tmp_path, tiny_data):
    """Cap 1.5 s less a 0.5 s GPTQ reserve: the stages end at 100 ms and 700 ms of training, so at
    50 ms per step the length switches before steps 3 (150 ms) and 15 (750 ms), the loop stops
    at 1000 ms (20 steps), and the logged LR multiplier re-warms over 4 steps after each switch."""
    rows = []
    result = _run_with_step_clock(tiny_config(
        tiny_data, tmp_path, "train.seq_schedule=16@0.1,32@0.7,64@1.0", "train.seq_rewarm_steps=4",
        "train.max_wallclock_seconds=1.5", "export.method=gptq", "export.reserve_seconds=0.5",
        "export.calib_batches=1", "train.iterations=1000", "train.warmdown_iters=0"), rows)
    assert result.steps == 20
    switches = _events(result.run_dir, "seq_len")
    assert [(e["step"], e["seq_len"], e["train_time_ms"]) for e in switches] == [(3, 32, 150.0), (15, 64, 750.0)]
    train_rows = [shape for step, shape in rows[:20]]  # then the Hessians' batch
    assert train_rows == [(64, 16)] * 3 + [(32, 32)] * 12 + [(16, 64)] * 5
    # the k-th step after a switch trains at (k + 1) / 4 (logged after the step: step numbers + 1)
    lr = {e["step"]: e["lr_mul"] for e in _events(result.run_dir, "train")}
    assert [lr[s] for s in range(1, 21)] == [1.0] * 3 + [0.25, 0.5, 0.75] + [1.0] * 9 + [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("loader", ["stream", "packed"])
def test_resume_across_a_switch_is_exact(tmp_path, tiny_data, dense_attention, loader):
    """The schedule switches before step 3 (3/8 > 0.25) and re-warms over steps 3-6; a checkpoint
    after step 4, in the middle of the re-warm, resumes the same losses and LR bit for bit."""
    extra = (*PACKED,) if loader == "packed" else ()
    common = (*extra, "train.seq_schedule=32@0.25,64@1.0", "train.seq_rewarm_steps=4", "train.warmdown_iters=0")
    full = run_training(tiny_config(tiny_data, tmp_path, "run.name=full", "train.checkpoint_every=4", *common))
    assert [e["step"] for e in _events(full.run_dir, "seq_len")] == [3]
    resumed = run_training(tiny_config(tiny_data, tmp_path, "run.name=resumed", *common,
                                       f"run.resume={full.run_dir / 'checkpoint_step4.pt'}"))
    assert train_losses(resumed.run_dir) == train_losses(full.run_dir)[4:]  # bitwise on CPU
    lr = lambda run: [e["lr_mul"] for e in _events(run.run_dir, "train")]
    assert lr(full)[3:7] == [0.25, 0.5, 0.75, 1.0] and lr(resumed) == lr(full)[4:]
    assert resumed.final == full.final


def test_packed_training_lowers_the_loss(tmp_path, tiny_data, dense_attention):
    result = run_training(tiny_config(tiny_data, tmp_path, *PACKED, "train.iterations=20", "train.warmdown_iters=0"))
    losses = train_losses(result.run_dir)
    assert len(losses) == 20 and sum(losses[-5:]) / 5 < losses[0] - 0.5, losses


# -- compiled shapes: nothing compiles after the warm-up -----------------------------------------

class GraphCounter:
    """A torch.compile backend that runs graphs eagerly and notes, per graph, whether it was
    compiled with grad on (a training step) and whether the warm-up was over."""

    def __init__(self):
        self.graphs: list[tuple[bool, bool]] = []
        self.primed = False

    def __call__(self, gm, example_inputs):
        self.graphs.append((torch.is_grad_enabled(), self.primed))
        return gm.forward

    def training_graphs(self, after_warm_up: bool) -> int:
        return sum(1 for grad, primed in self.graphs if grad and primed == after_warm_up)


def _count_graphs(monkeypatch, cfg) -> GraphCounter:
    counter = GraphCounter()
    real_compile, real_prime = torch.compile, Trainer._prime
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, **{**kw, "backend": counter}))

    def prime(self):
        real_prime(self)
        counter.primed = True

    monkeypatch.setattr(Trainer, "_prime", prime)
    monkeypatch.setattr(Trainer, "post_training_stages", lambda self: [])  # only the loop matters here
    torch._dynamo.reset()
    try:
        run_training(cfg)
    finally:
        torch._dynamo.reset()
    return counter


STREAM_SWITCHES = ("model.num_layers=2", "model.stack.loop_layers=1", "model.stack.loop_count=2",
                   "model.stack.loop_start_frac=0.25", "train.seq_schedule=32@0.5,64@1.0")


@pytest.mark.parametrize("warmup", [1, 0])
def test_warm_up_compiles_every_shape_of_the_schedule_and_recurrence(tmp_path, tiny_data, monkeypatch, warmup):
    """Recurrence on before step 2 (2/8), length 64 from step 5 (5/8 > 0.5): the run walks (32, off),
    (32, on), (64, on), compile_shapes' three graphs. Primed, all three compile in the warm-up and
    none after it; unprimed (the control), the same three compile during training."""
    counter = _count_graphs(monkeypatch, tiny_config(tiny_data, tmp_path, "run.compile=true", *STREAM_SWITCHES,
                                                     f"train.warmup_steps={warmup}"))
    assert counter.training_graphs(after_warm_up=False) == (3 if warmup else 0)
    assert counter.training_graphs(after_warm_up=True) == (0 if warmup else 3)


def test_packed_compiles_one_graph_per_length_whatever_the_cu_seqlens_length(tmp_path, tiny_data, monkeypatch,
                                                                             dense_attention):
    """cu_seqlens padded to multiples of 2 entries takes several lengths here; they share a graph
    (the feed marks that dimension dynamic). The rows keep their shape at every length, and the
    dense reference does not read max_seqlen, so here both lengths share one graph (flash reads
    it: one graph per length, each compiled by the warm-up, which walks every length)."""
    monkeypatch.setattr(feed_module, "CU_BUCKET", 2)
    lengths = set()
    real_next = TrainFeed.next_batch

    def next_batch(self):
        batch = real_next(self)
        lengths.add((batch.max_seqlen, batch.cu_seqlens.numel()))
        return batch

    monkeypatch.setattr(TrainFeed, "next_batch", next_batch)
    counter = _count_graphs(monkeypatch, tiny_config(tiny_data, tmp_path, "run.compile=true", *PACKED,
                                                     "train.seq_schedule=32@0.5,64@1.0", "train.warmup_steps=1",
                                                     "train.iterations=12"))
    assert len({n for length, n in lengths if length == 32}) > 1, lengths  # the test has teeth
    assert counter.training_graphs(after_warm_up=False) == 1
    assert counter.training_graphs(after_warm_up=True) == 0
