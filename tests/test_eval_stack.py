"""The eval stack around the windows mode (issue 15 items 3-5): the n-gram tilt wired into scoring,
document-isolated chunked scoring, eval windows longer than the training ones, the eval clock."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bpb_invariant import assert_bpb_invariant, decoded_document_bytes
from pgolf.config import Config, NgramConfig, load_config
from pgolf.data.encode import document_tokens
from pgolf.distributed import DistEnv
from pgolf.eval.clock import EvalClock, project, timed_eval, warn_if_over, within_budget
from pgolf.eval.evaluator import evaluate
from pgolf.eval.modes import EvalContext, windows_mode
from pgolf.eval.tilt import NO_TILT, build_tilt
from pgolf.eval.windows import plan_doc_windows, plan_windows
from pgolf.metric.bytes import ByteLUT
from pgolf.metric.valset import ValSet
from pgolf.model import GPT
from pgolf.ngram.tilt import tilt_log_probs

CPU = DistEnv(0, 1, 0, torch.device("cpu"))
NGRAM = NgramConfig(enabled=True)  # #2135's order 16, gate 0.8, beta 2.625


def _model(*overrides):
    torch.manual_seed(0)
    model = GPT(load_config("smoke", ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2",
                                      "model.num_kv_heads=1", *overrides], env={}).model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def _val(tok, docs) -> ValSet:
    tokens = np.concatenate([document_tokens(tok, d) for d in docs])
    lut = ByteLUT.from_sentencepiece(tok.sp)
    return ValSet(torch.from_numpy(tokens.astype(np.int32)), lut.position_bytes(torch.from_numpy(tokens)), "lut",
                  tok.bos_id)


@pytest.fixture(scope="module")
def repeats(own_tokenizer, heldout_docs):
    """A stream whose documents come back (A B C A B C): the n-gram hints fire on the repeats."""
    docs = [d[:600] for d in heldout_docs[:3]]
    return _val(own_tokenizer, docs * 2)


@pytest.fixture(scope="module")
def plain(own_tokenizer, heldout_docs):
    return _val(own_tokenizer, heldout_docs[:5])


def _ctx(model, val, seq_len=64, **eval_changes) -> EvalContext:
    cfg = Config().eval
    cfg.batch_tokens = 4096
    for k, v in eval_changes.items():
        setattr(cfg, k, v)
    return EvalContext(model, val, cfg, seq_len, CPU)


# -- the n-gram tilt ----------------------------------------------------------------------------

def test_c1_hints_at_t_do_not_change_when_tokens_from_t_on_change(repeats):
    tilt = build_tilt(NGRAM, repeats, 1024, CPU)
    assert tilt.fired > 50  # the second copy of each document is hinted
    bos = torch.nonzero(repeats.tokens == repeats.bos_id).flatten().tolist()
    gen = torch.Generator().manual_seed(0)
    for t in [17, len(repeats) // 3, bos[2] + 1, bos[3], len(repeats) - 5]:  # later documents change too
        tokens = repeats.tokens.clone()
        tail = tokens[t:]
        new = torch.randint(2, 1024, tail.shape, generator=gen, dtype=tokens.dtype)
        tokens[t:] = torch.where(tail == repeats.bos_id, tail, new)
        other = build_tilt(NGRAM, ValSet(tokens, repeats.position_bytes, "lut", repeats.bos_id), 1024, CPU)
        assert torch.equal(tilt.hints[:t + 1], other.hints[:t + 1]), t  # hint t is for the target at t
        assert not torch.equal(tilt.hints, other.hints)  # the change reached the later hints


def test_the_tilt_lowers_bpb_on_a_stream_with_repeats(repeats, own_tokenizer):
    model = _model()
    off = windows_mode(_ctx(model, repeats))
    on = windows_mode(_ctx(model, repeats, ngram=NGRAM))
    truth = decoded_document_bytes(own_tokenizer.sp, repeats.tokens.numpy(), own_tokenizer.bos_id)
    assert_bpb_invariant(on.result, len(repeats), truth)  # every target once, the same bytes
    assert on.result.val_bpb < off.result.val_bpb - 0.05, (on.result.val_bpb, off.result.val_bpb)
    assert set(on.seconds) == {"ngram_precompute", "scoring"} and set(off.seconds) == {"scoring"}


def test_the_tilted_score_is_minus_log_of_the_full_tilted_distribution(repeats):
    """The windows evaluator's closed-form tilted NLL (logsumexp + two gathers) against the full
    renormalised distribution (pgolf.ngram.tilt.tilt_log_probs), window by window."""
    model = _model()
    tilt = build_tilt(NGRAM, repeats, 1024, CPU)
    got = evaluate(model, repeats, 64, 0, windows_per_batch=3, tilt=tilt)
    total = 0.0
    w = plan_windows(len(repeats), 64, 0)
    for start, first in zip(w.starts.tolist(), w.first_scored.tolist()):
        x = repeats.tokens[start:start + 64].long()[None]
        y = repeats.tokens[start + 1:start + 65].long()[None]
        pos = torch.arange(start + 1, start + 65)
        with torch.no_grad():
            lp = torch.log_softmax(model.logits(model.hidden(x)).double(), -1)[0]
        tilted = tilt_log_probs(lp, tilt.hints_at(pos), NGRAM.beta)
        sums = tilted.exp().sum(-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)  # C2
        nll = -tilted.gather(-1, y[0, :, None]).squeeze(-1)
        total += float(nll[pos >= first].sum())
    assert math.isclose(got.loss_sum, total, rel_tol=1e-5)


def test_score_logits_trains_on_the_untilted_nll_and_scores_the_tilted(repeats):
    tilt = build_tilt(NGRAM, repeats, 1024, CPU)
    pos = torch.nonzero(tilt.hints >= 0).flatten()[:20]
    logits = torch.randn(20, 1024, requires_grad=True)
    targets = repeats.tokens[pos].long()
    nll, score = tilt.score_logits(logits, targets, pos)
    assert nll.requires_grad and not score.requires_grad
    torch.testing.assert_close(nll, torch.nn.functional.cross_entropy(logits, targets, reduction="none"))
    assert torch.all(score < nll)  # all hits on a random model: each saves beta - log Z > 0
    assert NO_TILT.score_logits(logits, targets, pos)[1].equal(nll.detach())


def test_disabled_ngram_scores_exactly_as_before(plain):
    model = _model()
    assert build_tilt(NgramConfig(), plain, 1024, CPU) is NO_TILT
    assert windows_mode(_ctx(model, plain)).result == evaluate(model, plain, 64, 0, windows_per_batch=4096 // 64)


# -- document-isolated scoring ------------------------------------------------------------------

@given(lengths=st.lists(st.integers(1, 90), min_size=1, max_size=8), seq_len=st.integers(1, 40),
       stride_frac=st.floats(0, 1), lead_bos=st.booleans())
@settings(max_examples=200, deadline=None)
def test_doc_windows_score_every_target_once_inside_its_document(lengths, seq_len, stride_frac, lead_bos):
    bos = 0
    tokens = torch.cat([torch.cat([torch.tensor([bos]), torch.randint(1, 9, (n,))]) for n in lengths])
    if not lead_bos:
        tokens = tokens[1:]
    if tokens.numel() < 2:
        return
    stride = int(stride_frac * seq_len)
    w = plan_doc_windows(tokens, bos, seq_len, stride)
    assert torch.all(w.starts[1:] > w.starts[:-1])  # stream order, the order the tilt's state is built in
    scored = []
    for start, first, length in zip(w.starts.tolist(), w.first_scored.tolist(), w.lengths.tolist()):
        inputs = tokens[start:start + length]
        assert length <= w.seq_len and start + length <= tokens.numel() - 1
        assert not torch.any(inputs[1:] == bos)  # no window's real inputs cross a BOS
        mine = list(range(max(first, start + 1), start + length + 1))
        assert mine and mine[-1] == start + length
        scored += mine
    assert sorted(scored) == list(range(1, tokens.numel()))


def test_doc_isolated_eval_scores_each_document_alone(plain, own_tokenizer):
    """Each document scored in one window of its own (documents shorter than the window) equals the
    model run on that document alone; every target once, the stream's bytes."""
    model = _model()
    starts = torch.nonzero(plain.tokens == plain.bos_id).flatten().tolist() + [len(plain) - 1]
    longest = max(b - a for a, b in zip(starts[:-1], starts[1:]))
    out = windows_mode(_ctx(model, plain, seq_len=longest, doc_isolated=True))
    truth = decoded_document_bytes(own_tokenizer.sp, plain.tokens.numpy(), own_tokenizer.bos_id)
    assert_bpb_invariant(out.result, len(plain), truth)
    total = 0.0
    for a, b in zip(starts[:-1], starts[1:]):
        with torch.no_grad():
            total += float(model(plain.tokens[a:b].long()[None], plain.tokens[a + 1:b + 1].long()[None],
                                 reduction="sum"))
    assert math.isclose(out.result.loss_sum, total, rel_tol=1e-5)
    assert out.result.loss_sum != windows_mode(_ctx(model, plain, seq_len=longest)).result.loss_sum


@pytest.mark.parametrize("stride", [0, 16])
def test_long_documents_are_chunked_with_in_document_context(plain, own_tokenizer, stride):
    model = _model()
    out = windows_mode(_ctx(model, plain, seq_len=48, stride=stride, doc_isolated=True))
    truth = decoded_document_bytes(own_tokenizer.sp, plain.tokens.numpy(), own_tokenizer.bos_id)
    assert_bpb_invariant(out.result, len(plain), truth)
    assert math.isfinite(out.result.val_bpb)


# -- windows longer than training's -------------------------------------------------------------

@pytest.mark.parametrize("overrides", [[], ["model.attention.rope_dims=8"], ["model.doc_isolation=true"]],
                         ids=["rope", "partial-rope", "doc-isolation"])
@pytest.mark.parametrize("doc_isolated", [False, True])
def test_eval_windows_longer_than_training(plain, own_tokenizer, overrides, doc_isolated):
    """Trained at 64, scored at 160 and 192 (the 2560 / 3072 against 2048 of the records, scaled):
    RoPE tables for the new length, every target once, and a window's first 64 scores equal to the
    ones a 64-token window gives (the cache for another length does not leak into them)."""
    model = _model("train.seq_len=64", *overrides)
    truth = decoded_document_bytes(own_tokenizer.sp, plain.tokens.numpy(), own_tokenizer.bos_id)
    for seq_len in (160, 192):
        out = windows_mode(_ctx(model, plain, seq_len=seq_len, doc_isolated=doc_isolated))
        assert_bpb_invariant(out.result, len(plain), truth)
        assert math.isfinite(out.result.val_bpb)
    x = plain.tokens[:192].long()[None]
    with torch.no_grad():
        long = model(x, plain.tokens[1:193].long()[None], reduction="none")
        short = model(x[:, :64], plain.tokens[1:65].long()[None], reduction="none")
    torch.testing.assert_close(long[:64], short, rtol=1e-5, atol=1e-5)


# -- the eval clock -----------------------------------------------------------------------------

def test_the_clock_reports_every_part_and_the_total(plain):
    clock = EvalClock(torch.device("cpu"))
    with clock.part("model_build"):
        model = _model()
    report = timed_eval(clock, _ctx(model, plain, ngram=NGRAM))
    parts = report["eval_parts"]
    assert {"model_build", "ngram_precompute", "scoring", "mode_other"} <= set(parts)
    assert math.isclose(report["eval_total_seconds"], sum(parts.values()))
    assert report["eval_projection_8xh100"] is None  # a CPU time projects nothing
    assert report["within_eval_budget"] and report["result"].token_count == len(plain) - 1


def test_the_projection_divides_only_the_scoring_and_states_its_assumption():
    parts = {"artifact_read": 2.0, "model_build": 3.0, "ngram_precompute": 40.0, "scoring": 800.0}
    h100 = project(parts, 1, "NVIDIA H100 80GB HBM3")
    assert h100.seconds == pytest.approx(45.0 + 800.0 / 8)
    assert "H100" in h100.assumption and "assumed" not in h100.assumption
    other = project(parts, 2, "NVIDIA A100-SXM4-80GB")
    assert other.seconds == pytest.approx(45.0 + 800.0 * 2 / 8)
    assert "assumed" in other.assumption and "not measured" in other.assumption
    assert project(parts, 1, None) is None


def test_a_projection_over_budget_warns_with_the_assumption():
    parts = {"model_build": 5.0, "scoring": 8 * 700.0}
    proj = project(parts, 1, "NVIDIA H100 80GB HBM3")
    report = {"eval_parts": parts, "eval_total_seconds": sum(parts.values()),
              "eval_projection_8xh100": proj.as_dict()}
    with pytest.warns(RuntimeWarning, match=r"705\.0 s on 8×H100.*budget_seconds=600.*divided over 8 ranks"):
        warn_if_over(report, 600.0)
    assert not within_budget(report["eval_total_seconds"], proj, 600.0) and within_budget(1e9, proj, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_over(report, 1000.0) is None and warn_if_over(report, 0) is None


def test_a_recorded_eval_window_longer_than_training_reads_back():
    """An artifact records its eval window (2560 for the frontier preset): reading its eval section back
    must not trip over the train batch (786,432 tokens is no multiple of 2560)."""
    from pgolf.eval.scoring import recorded_eval_config

    cfg = Config()
    cfg.eval.seq_len, cfg.eval.stride = 2560, 64
    meta = {"seq_len": 2560, "stride": 64, "eval": cfg.to_dict()["eval"]}
    got = recorded_eval_config("long.pgolf", meta)
    assert (got.seq_len, got.stride) == (2560, 64)


def test_the_trainer_and_pgolf_eval_report_the_same_clocked_tilted_score(tmp_path, tiny_data, capsys):
    """The trainer's final score and `pgolf eval` share the clock and the recorded eval section (tilt and
    document isolation on): result.json and the eval JSON carry every part, the total and no projection
    (CPU), and the two scores agree."""
    import json

    from conftest import tiny_config
    from pgolf.cli import main
    from pgolf.train.trainer import run_training

    cfg = tiny_config(tiny_data, tmp_path, "eval.ngram.enabled=true", "eval.ngram.order=3",
                      "eval.ngram.threshold=0.5", "eval.doc_isolated=true")
    run_training(cfg)
    capsys.readouterr()
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert {"artifact_read", "model_build", "ngram_precompute", "scoring"} <= set(result["eval_parts"])
    assert result["eval_seconds"] == result["eval_total_seconds"] == pytest.approx(sum(result["eval_parts"].values()))
    assert result["eval_projection_8xh100"] is None and result["within_eval_budget"]
    assert main(["eval", str(tmp_path / "t" / "model.pgolf"), "--json", "--device", "cpu"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["ngram"] and scored["doc_isolated"]
    assert {"artifact_read", "model_build", "val_load", "ngram_precompute", "scoring"} <= set(scored["eval_parts"])
    assert scored["val_bpb"] == pytest.approx(result["final"]["val_bpb"], abs=5e-7)
    assert main(["eval", str(tmp_path / "t" / "model.pgolf"), "--json", "--device", "cpu", "--no-ngram",
                 "--no-doc-isolated"]) == 0  # the same artifact with the tilt and the isolation off
    plain = json.loads(capsys.readouterr().out)
    assert not plain["ngram"] and not plain["doc_isolated"] and "ngram_precompute" not in plain["eval_parts"]
    assert plain["token_count"] == scored["token_count"] and plain["val_bpb"] != scored["val_bpb"]


def _tilted_rank(rank, store, model, val, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        env = DistEnv(rank, 2, rank, torch.device("cpu"))
        ctx = _ctx(model, val, stride=16, ngram=NGRAM)
        ctx.env = env
        tilt = build_tilt(NGRAM, val, 1024, env)
        out[rank] = (windows_mode(ctx).result.as_dict(), tilt.backend)
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_one_build_and_equal_one_rank(tmp_path, repeats):
    import torch.multiprocessing as tmp_mp

    model = _model()
    out = tmp_mp.Manager().dict()
    tmp_mp.spawn(_tilted_rank, args=(str(tmp_path / "store"), model, repeats, out), nprocs=2)
    single = windows_mode(_ctx(model, repeats, stride=16, ngram=NGRAM)).result.as_dict()
    assert "(built)" in out[0][1] and "(loaded)" in out[1][1]  # rank 1 read rank 0's file
    for r in (0, 1):
        got = out[r][0]
        assert got["token_count"] == single["token_count"] and got["byte_count"] == single["byte_count"]
        assert math.isclose(got["loss_sum"], single["loss_sum"], rel_tol=1e-9)


def test_in_file_order_the_document_spans_walk_the_stream_as_one(repeats):
    """The windows mode's hints (documents as target spans, file order) are the whole stream's walk; a
    reversed order gives other hints (the order reaches the state)."""
    from pgolf.ngram import build_hints
    from pgolf.eval.ngram_tilt import document_starts, settings_of

    tokens = repeats.tokens.numpy()
    whole = build_hints(tokens, 1024, settings=settings_of(NGRAM))
    tilt = build_tilt(NGRAM, repeats, 1024, CPU)
    assert np.array_equal(tilt.hints.numpy(), whole.token)
    docs = len(document_starts(tokens, repeats.bos_id))
    reversed_ = build_tilt(NGRAM, repeats, 1024, CPU, order=np.arange(docs)[::-1].copy())
    assert not torch.equal(reversed_.hints, tilt.hints)
