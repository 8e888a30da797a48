"""The score-first per-document LoRA TTT engine (pgolf.eval.ttt, challenge-spec §5.14, frontier-spec F3/F4)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.config import Config, TTTConfig, load_config
from pgolf.distributed import DistEnv
from pgolf.errors import PgolfError
from pgolf.eval import modes
from pgolf.eval.evaluator import evaluate
from pgolf.eval.ttt import engine
from pgolf.eval.ttt.chunks import chunk_window
from pgolf.eval.ttt.documents import (Doc, PublicBOS, batch_queue, chunk_size_for, parse_short_doc_chunks,
                                      phase_boundaries, queue_order, split_documents)
from pgolf.eval.ttt.engine import lora_sites, run_lora_ttt
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.ledger_audit import c3_violations, update_positions
from pgolf.metric.valset import ValSet
from pgolf.model import GPT
from pgolf.model.lora import DocLoRA, lora_parameter_count

BOS, V = 1, 64
CPU = DistEnv(0, 1, 0, torch.device("cpu"))
TTT = TTTConfig(seq_len=48, chunk_size=8, batch_docs=4, lora_rank=4, lora_alpha=8.0, lora_lr=0.03, weight_decay=0.0,
                phases=0, prefix_docs=6)


def repeated_docs(n_docs: int, seed: int = 1) -> ValSet:
    """BOS-separated documents, each a random token sequence repeated 4 times (TTT can learn it)."""
    g = torch.Generator().manual_seed(seed)
    toks = []
    for _ in range(n_docs):
        seq = torch.randint(2, V, (int(torch.randint(3, 16, (1,), generator=g)),), generator=g)
        toks += [BOS] + seq.repeat(4).tolist()
    tokens = torch.tensor(toks, dtype=torch.int32)
    position_bytes = torch.where(tokens == BOS, 0, 1 + tokens % 3).int()  # BOS targets are worth 0 bytes
    position_bytes[0] = 0
    return ValSet(tokens, position_bytes, "lut", BOS)


def tiny_model() -> GPT:
    torch.manual_seed(0)
    model = GPT(load_config("smoke", ["model.num_layers=3", "model.model_dim=32", "model.num_heads=2",
                                      "model.num_kv_heads=1", f"model.vocab_size={V}", "model.stack.loop_layers=1-1",
                                      "model.stack.loop_count=2"], env={}).model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    return tiny_model(), repeated_docs(14)


# -- documents, queue, schedule --

def test_documents_partition_the_targets_exactly():
    for stream in ([1, 5, 6, 1, 7, 1, 1, 8, 9], [1, 2, 3], [1, 4, 1], [1, 1, 1, 5]):
        docs = split_documents(torch.tensor(stream), 1)
        targets = [p for d in docs for p in range(d.start + 1, d.end + 1)]
        assert targets == list(range(1, len(stream)))
        assert all(stream[d.start] == 1 for d in docs)
    with pytest.raises(PgolfError, match="BOS"):
        split_documents(torch.tensor([5, 1, 2]), 1)


def test_the_queue_is_length_sorted_longest_first_and_is_the_scoring_order(setup):
    _, val = setup
    docs = split_documents(val.tokens, BOS)
    queue = batch_queue(docs, 4)
    assert [len(b) for b in queue] == [4, 4, 4, 2]
    lengths = [d.length for b in queue for d in b]
    assert lengths == sorted(lengths, reverse=True)
    assert queue_order(val, TTT) == [(d.start, d.end) for b in queue for d in b]


def test_short_doc_chunk_schedule_follows_the_batch_maximum():
    ttt = replace(TTT, chunk_size=48, short_doc_chunks="2000:24, 256:8")
    assert parse_short_doc_chunks(ttt.short_doc_chunks) == [(256, 8), (2000, 24)]
    assert chunk_size_for([Doc(0, 100), Doc(100, 355)], ttt) == 8  # longest 256 tokens, BOS ends included
    assert chunk_size_for([Doc(0, 256)], ttt) == 24
    assert chunk_size_for([Doc(0, 5000)], ttt) == 48
    assert chunk_size_for([Doc(0, 100)], replace(ttt, short_doc_chunks="")) == 48
    for bad in ("256", "a:b", "256:0", "0:8"):
        with pytest.raises(PgolfError, match="eval.ttt.short_doc_chunks"):
            parse_short_doc_chunks(bad)


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5), chunk=st.integers(1, 9),
       context=st.integers(9, 30), trailing_bos=st.booleans())
@settings(max_examples=150, deadline=None)
def test_chunk_windows_score_each_target_once_with_the_document_before_it(lengths, chunk, context, trailing_bos):
    stream = [t for n in lengths for t in [BOS] + list(range(2, 2 + n))] + [BOS] * trailing_bos
    if len(stream) < 2:
        stream.append(5)
    tokens = torch.tensor(stream)
    batch = split_documents(tokens, BOS)
    scored, ci = [], 0
    while (w := chunk_window(tokens, batch, ci, chunk, context)) is not None:
        for r, d in enumerate(batch):
            mine = w.positions[r][w.scored[r]].tolist()
            scored += mine
            if mine:  # a window ends at its chunk's last target and stays inside the document
                assert int(w.last[r]) == mine[-1] and d.start <= int(w.start[r]) and mine[-1] <= d.end
                assert mine[-1] - int(w.start[r]) <= context and len(mine) <= chunk
                assert bool(w.train_rows[r]) == (mine[-1] != d.end)  # never trains on a last chunk
                assert torch.equal(w.y[r].gather(0, w.cols[r])[w.scored[r]], tokens[mine])
        ci += 1
    assert sorted(scored) == list(range(1, len(stream)))


def test_document_bos_reads_are_public_other_reads_are_not():
    tokens = torch.tensor([1, 5, 6, 1, 7, 8])
    ledger = ScoreLedger(6)
    view = PublicBOS(ledger, split_documents(tokens, 1))
    view.scored([4, 5])
    view.update(torch.arange(3, 6))  # doc 2 read from its BOS (3, scored as doc 1's last target later)
    assert c3_violations(ledger) == (0, []) and view.updates == 1
    view.update([2, 3])  # position 2 is a target not yet scored
    assert c3_violations(ledger)[0] == 1
    view.update_ranges([3, 0], [5, 1])  # as ranges: 3 (public) dropped, 4-5 scored; 0 public, 1 not scored
    view.update_ranges([0], [5])  # a range over a document boundary: 1, 2 unscored, 0 and 3 public
    total, found = c3_violations(ledger)
    assert total == 1 + 1 + 2 and [(v.update, v.position) for v in found] == [(2, 2), (3, 1), (4, 1), (4, 2)]
    assert update_positions(ledger, 4).tolist() == [1, 2, 4, 5]


def test_phase_boundaries_are_the_records():
    assert phase_boundaries(50_000, TTTConfig()) == [833, 1666, 2500]
    assert phase_boundaries(50_000, TTTConfig(phases=1)) == [2500]
    assert phase_boundaries(9, TTTConfig(phases=3, prefix_docs=2500)) == [3, 6, 9]
    assert phase_boundaries(50_000, TTTConfig(phases=0)) == []


# -- C3, C4, the gain --

def test_c3_by_the_ledger_and_c4_totals_equal_the_plain_eval(setup):
    model, val = setup
    report = run_lora_ttt(model, val, replace(TTT, short_doc_chunks="40:4", grad_steps=2), CPU)
    plain = evaluate(model, val, 48, 0, 4)
    assert (report.result.token_count, report.result.byte_count) == (plain.token_count, plain.byte_count)
    assert report.updates > 0 and report.ledger.updates == report.updates
    assert c3_violations(report.ledger) == (0, [])
    assert (report.ledger.times_scored[1:] == 1).all()  # and the ledger saw every target once
    assert report.bos_targets == 13  # each document boundary but the first position
    assert report.records_comparable_bpb < report.result.val_bpb
    plain_chunks = run_lora_ttt(model, val, replace(TTT, grad_steps=2), CPU)
    assert report.updates > plain_chunks.updates  # short documents (<= 40 tokens) step every 4 targets, not 8


def test_a_planted_engine_that_updates_before_scoring_is_caught(setup, monkeypatch):
    model, val = setup

    def train_then_score(self, w):
        self.train(w, None)
        self.score(w, *self.forward(w))

    monkeypatch.setattr(engine.BatchRunner, "chunk", train_then_score)
    report = run_lora_ttt(model, val, TTT, CPU)
    total, found = c3_violations(report.ledger)
    assert total > 0 and found[0].update == 1


def test_ttt_lowers_bpb_on_documents_with_repeated_content(setup):
    model, val = setup
    ttt = run_lora_ttt(model, val, TTT, CPU).result
    frozen = run_lora_ttt(model, val, replace(TTT, lora_lr=0.0), CPU).result
    plain = evaluate(model, val, 48, 0, 4)
    assert ttt.val_bpb < frozen.val_bpb - 0.05 and ttt.val_bpb < plain.val_bpb - 0.05
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # the base is left as it was


def test_the_score_transform_changes_the_score_only(setup):
    model, val = setup
    seen = {}

    def recorder(name, mix):
        def transform(lp, positions):
            assert lp.dtype == torch.float32 and lp.shape[:2] == positions.shape and lp.shape[2] == V
            seen.setdefault(name, []).append(lp.clone())
            return torch.logaddexp(lp + math.log(1 - mix), torch.full_like(lp, math.log(mix / V)))
        return transform

    a = run_lora_ttt(model, val, TTT, CPU, score_transform=recorder("a", 1e-9)).result
    b = run_lora_ttt(model, val, TTT, CPU, score_transform=recorder("b", 0.3)).result
    plain = run_lora_ttt(model, val, TTT, CPU).result
    assert math.isclose(a.loss_sum, plain.loss_sum, rel_tol=1e-6) and b.loss_sum != plain.loss_sum
    assert len(seen["a"]) == len(seen["b"])  # training never saw the transform: the same distributions
    assert all(torch.equal(x, y) for x, y in zip(seen["a"], seen["b"]))


# -- phases (a stand-in for pgolf.eval.ttt.global_sgd: full-batch SGD over the given documents) --

def standin_global_sgd(calls, lr=0.2):
    def step(model, tokens, docs, ledger, env):
        calls.append(list(docs))
        params = [p for p in model.parameters() if p.requires_grad]
        assert params, "the engine hands the phase a trainable base model"
        opt = torch.optim.SGD(params, lr=lr)
        for _ in range(2):
            loss = sum(model(tokens[s:e].long()[None], tokens[s + 1:e + 1].long()[None]) for s, e in docs) / len(docs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ledger.update(np.concatenate([np.arange(s, e + 1) for s, e in docs]))
        return 2
    return step


def test_phases_train_the_base_on_the_first_scored_documents_in_queue_order(setup):
    _, val = setup
    model, calls = tiny_model(), []
    before = [p.detach().clone() for p in model.parameters()]
    ttt = replace(TTT, phases=2, prefix_docs=6)
    report = run_lora_ttt(model, val, ttt, CPU, global_step=standin_global_sgd(calls))
    order = queue_order(val, ttt)
    assert calls == [order[:3], order[:6]] and report.phase_steps == [2, 2]
    assert c3_violations(report.ledger) == (0, [])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())  # restored after the run
    with pytest.raises(PgolfError, match="global SGD"):
        run_lora_ttt(model, val, ttt, CPU)


def test_a_phase_that_reads_unscored_documents_is_caught(setup):
    _, val = setup
    model = tiny_model()
    late = queue_order(val, TTT)[-2:]  # the last batch's documents: not scored at the first phase

    def peeks(model, tokens, docs, ledger, env):
        return standin_global_sgd([])(model, tokens, list(docs) + late, ledger, env)

    report = run_lora_ttt(model, val, replace(TTT, phases=1, prefix_docs=4), CPU, global_step=peeks)
    assert c3_violations(report.ledger)[0] > 0


def test_masks_reduce_the_trainable_set(setup):
    model, _ = setup
    sizes = {name: lora_parameter_count(DocLoRA(model, 1, 4, 8.0, lora_sites(t))) for name, t in
             (("all", TTT), ("k_off", replace(TTT, k_lora=False)), ("no_qv", replace(TTT, q_lora=False, v_lora=False)))}
    assert sizes["no_qv"] < sizes["k_off"] < sizes["all"]


def test_the_lora_ttt_mode_dispatches_to_the_engine(setup):
    model, val = setup
    cfg = Config().eval
    cfg.mode, cfg.ttt = "lora_ttt", TTT
    assert modes.eval_mode("lora_ttt") is modes.lora_ttt_mode
    outcome = modes.run_eval(modes.EvalContext(model, val, cfg, 48, CPU))
    assert outcome.ledger is not None and outcome.ledger.updates > 0
    assert outcome.result.loss_sum == run_lora_ttt(model, val, TTT, CPU).result.loss_sum
    assert {"ttt", "global_sgd"} <= set(outcome.seconds)


# -- two ranks --

def _rank(rank, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, val = tiny_model(), repeated_docs(14)
        ttt = replace(TTT, warm_start_a=False, phases=1, prefix_docs=6)
        report = run_lora_ttt(model, val, ttt, DistEnv(rank, 2, 0, torch.device("cpu")),
                              global_step=standin_global_sgd([]))
        out[rank] = {**report.result.as_dict(), "c3": c3_violations(report.ledger)[0], "batches": report.batches}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_give_the_score_of_one(tmp_path):
    out = tmp_mp.Manager().dict()
    tmp_mp.spawn(_rank, args=(str(tmp_path / "store"), out), nprocs=2)
    ttt = replace(TTT, warm_start_a=False, phases=1, prefix_docs=6)
    single = run_lora_ttt(tiny_model(), repeated_docs(14), ttt, CPU, global_step=standin_global_sgd([])).result
    assert out[0]["batches"] + out[1]["batches"] == 4
    for r in (0, 1):
        assert out[r]["c3"] == 0
        assert (out[r]["token_count"], out[r]["byte_count"]) == (single.token_count, single.byte_count)
        assert math.isclose(out[r]["loss_sum"], single.loss_sum, rel_tol=1e-6)


def test_queue_document_indices_number_the_tilts_documents_in_queue_order(setup):
    from pgolf.eval.ngram_tilt import document_starts
    from pgolf.eval.ttt.documents import queue_document_indices

    _, val = setup
    starts = document_starts(val.tokens.numpy(), val.bos_id)
    assert starts[queue_document_indices(val, TTT)].tolist() == [s for s, _ in queue_order(val, TTT)]
