import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp
from hypothesis import given, settings
from hypothesis import strategies as st

from bpb_invariant import assert_bpb_invariant, decoded_document_bytes
from pgolf.config import load_config
from pgolf.data.encode import document_tokens
from pgolf.eval.evaluator import evaluate
from pgolf.eval.windows import plan_windows
from pgolf.metric.bytes import ByteLUT
from pgolf.metric.valset import ValSet
from pgolf.model import GPT


@given(n=st.integers(2, 600), seq_len=st.integers(1, 64), stride_frac=st.floats(0, 1))
@settings(max_examples=300, deadline=None)
def test_windows_score_every_target_once_with_enough_context(n, seq_len, stride_frac):
    stride = int(stride_frac * seq_len)  # 0 means non-overlapping
    w = plan_windows(n, seq_len, stride)
    scored = []
    for start, first in zip(w.starts.tolist(), w.first_scored.tolist()):
        assert start >= 0 and start + w.seq_len <= n - 1  # inputs and targets inside the stream
        targets = range(start + 1, start + w.seq_len + 1)
        mine = [p for p in targets if p >= first]
        assert mine and mine[-1] == start + w.seq_len  # each window scores its last targets
        min_context = min(p - start - 1 for p in mine)
        assert min_context >= min(mine[0] - 1, w.seq_len - (stride or w.seq_len))
        scored += mine
    assert scored == list(range(1, n))


@pytest.fixture(scope="module")
def tiny_eval(own_tokenizer, heldout_docs):
    tokens = np.concatenate([document_tokens(own_tokenizer, d) for d in heldout_docs[:6]])
    lut = ByteLUT.from_sentencepiece(own_tokenizer.sp)
    val = ValSet(torch.from_numpy(tokens.astype(np.int32)), lut.position_bytes(torch.from_numpy(tokens)), "lut", 1)
    torch.manual_seed(0)
    model = GPT(load_config("smoke", ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2",
                                      "model.num_kv_heads=1"], env={}).model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    truth = decoded_document_bytes(own_tokenizer.sp, tokens, own_tokenizer.bos_id)
    return model.eval(), val, truth


def reference_eval(model, val, seq_len, stride):
    """One window at a time, no batching or padding: the sums the evaluator must reproduce."""
    w = plan_windows(len(val), seq_len, stride)
    loss = 0.0
    for start, first in zip(w.starts.tolist(), w.first_scored.tolist()):
        x = val.tokens[start:start + w.seq_len].long()[None]
        y = val.tokens[start + 1:start + w.seq_len + 1].long()[None]
        with torch.no_grad():
            nll = model(x, y, reduction="none")
        keep = torch.arange(start + 1, start + w.seq_len + 1) >= first
        loss += float(nll[keep].double().sum())
    return loss


@pytest.mark.parametrize("seq_len, stride", [(64, 0), (64, 16), (50, 7)])
def test_evaluator_matches_the_one_window_reference(tiny_eval, seq_len, stride):
    model, val, truth = tiny_eval
    result = evaluate(model, val, seq_len, stride, windows_per_batch=3)
    assert_bpb_invariant(result, len(val), truth)
    assert math.isclose(result.loss_sum, reference_eval(model, val, seq_len, stride), rel_tol=1e-6)


def test_a_small_val_set_is_not_padded_up_to_the_batch(tiny_eval):
    """Issue 12 bug 5: with the default 524,288-token batch, a few windows of val were padded to
    512 windows per forward. A batch holds at most the windows there are."""
    model, val, _ = tiny_eval
    rows = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        result = evaluate(model, val, 64, 0, windows_per_batch=524_288 // 64)
    finally:
        handle.remove()
    n_windows = len(plan_windows(len(val), 64))
    assert rows == [n_windows] and result.token_count == len(val) - 1
    rows.clear()
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        evaluate(model, val, 64, 0, windows_per_batch=4)  # a smaller batch is kept: fixed shape, last one padded
    finally:
        handle.remove()
    assert rows == [4] * -(-n_windows // 4)


def test_sliding_windows_give_each_token_more_context(tiny_eval):
    model, val, _ = tiny_eval
    flat = evaluate(model, val, 64, 0, windows_per_batch=8)
    sliding = evaluate(model, val, 64, 8, windows_per_batch=8)
    assert flat.token_count == sliding.token_count and flat.byte_count == sliding.byte_count
    assert flat.loss_sum != sliding.loss_sum


def _rank(rank, store, model, val, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        out[rank] = evaluate(model, val, 64, 16, windows_per_batch=4, rank=rank, world=2).as_dict()
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one(tmp_path, tiny_eval):
    model, val, _ = tiny_eval
    out = tmp_mp.Manager().dict()
    tmp_mp.spawn(_rank, args=(str(tmp_path / "store"), model, val, out), nprocs=2)
    single = evaluate(model, val, 64, 16, windows_per_batch=4).as_dict()
    for r in (0, 1):
        assert out[r]["token_count"] == single["token_count"] and out[r]["byte_count"] == single["byte_count"]
        assert math.isclose(out[r]["loss_sum"], single["loss_sum"], rel_tol=1e-9)
