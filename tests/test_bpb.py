import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp

from bpb_invariant import assert_bpb_invariant, decoded_document_bytes
from pgolf.data.encode import document_tokens
from pgolf.errors import PgolfError
from pgolf.metric.bpb import BPBAccumulator, BPBResult
from pgolf.metric.bytes import ByteLUT


@pytest.fixture(scope="module")
def val_stream(own_tokenizer, heldout_docs):
    tokens = np.concatenate([document_tokens(own_tokenizer, d) for d in heldout_docs[:60]])
    lut = ByteLUT.from_sentencepiece(own_tokenizer.sp)
    return torch.from_numpy(tokens.astype(np.int32)), lut.position_bytes(torch.from_numpy(tokens))


def fake_nll(n, seed=0):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 8


def test_random_batches_in_any_order_give_the_exact_totals(val_stream, own_tokenizer):
    tokens, pos_bytes = val_stream
    n = tokens.numel()
    nll = fake_nll(n)
    acc = BPBAccumulator(tokens, pos_bytes)
    order = torch.randperm(n - 1, generator=torch.Generator().manual_seed(1)) + 1
    for chunk in order.split(997):
        acc.add(nll[chunk].to(torch.float32), chunk, targets=tokens[chunk])
    r = acc.result()
    assert r.token_count == n - 1
    assert math.isclose(r.loss_sum, float(nll[1:].double().sum()), rel_tol=1e-12)
    truth = decoded_document_bytes(own_tokenizer.sp, tokens.numpy(), own_tokenizer.bos_id)
    assert_bpb_invariant(r, n, truth)
    assert math.isclose(r.val_bpb, r.loss_sum / (math.log(2) * truth), rel_tol=1e-15)


def test_truncated_end(val_stream):
    tokens, pos_bytes = val_stream
    end = 1 + 5 * 64
    acc = BPBAccumulator(tokens, pos_bytes, end=end)
    pos = torch.arange(1, end)
    acc.add(torch.ones(end - 1), pos)
    assert_bpb_invariant(acc.result(), tokens.numel(), int(pos_bytes[1:end].sum()), end=end)


@pytest.mark.parametrize("positions, message", [
    (lambda n: torch.arange(2, n), "1 targets never scored \\(first at position 1\\)"),
    (lambda n: torch.cat([torch.arange(1, n), torch.tensor([9, 7])]), "2 targets scored more than once \\(first at position 7\\)"),
    (lambda n: torch.arange(0, n), "position 0 \\(the stream's first BOS, never a target\\) was scored"),
])
def test_coverage_violations_refuse_to_give_a_number(val_stream, positions, message):
    tokens, pos_bytes = val_stream
    pos = positions(tokens.numel())
    acc = BPBAccumulator(tokens, pos_bytes)
    acc.add(torch.ones(pos.numel()), pos)
    with pytest.raises(PgolfError, match=message):
        acc.result()


def test_scoring_past_end_and_out_of_bounds(val_stream):
    tokens, pos_bytes = val_stream
    acc = BPBAccumulator(tokens, pos_bytes, end=100)
    acc.add(torch.ones(100), torch.arange(1, 101))
    with pytest.raises(PgolfError, match="1 positions at or past end=100 were scored"):
        acc.result()
    with pytest.raises((IndexError, RuntimeError)):
        BPBAccumulator(tokens, pos_bytes).add(torch.ones(1), torch.tensor([-1]))


def test_misaligned_targets_are_caught(val_stream):
    tokens, pos_bytes = val_stream
    n = tokens.numel()
    acc = BPBAccumulator(tokens, pos_bytes)
    pos = torch.arange(1, n)
    acc.add(torch.ones(n - 1), pos, targets=tokens[pos - 1])  # an off-by-one eval
    with pytest.raises(PgolfError, match="differ from the val tokens at their positions"):
        acc.result()


def test_sums_are_float64():
    n = 1_000_001
    tokens = torch.zeros(n, dtype=torch.int32)
    acc = BPBAccumulator(tokens, torch.ones(n, dtype=torch.int32))
    nll = torch.full((n - 1,), 0.1, dtype=torch.float32)
    for chunk in torch.arange(1, n).split(4096):
        acc.add(nll[: chunk.numel()], chunk)
    r = acc.result()
    exact = (n - 1) * float(np.float32(0.1))
    assert abs(r.loss_sum - exact) / exact < 1e-12  # a float32 running sum drifts by ~1e-4 here
    assert r.byte_count == n - 1


def test_result_properties():
    r = BPBResult(loss_sum=1000.0, token_count=400, byte_count=1200)
    assert r.val_loss == 2.5 and math.isclose(r.val_bpb, 1000 / (math.log(2) * 1200)) and r.bytes_per_token == 3


def _rank_worker(rank, world, store, tokens, pos_bytes, nll, mode, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        n = tokens.numel()
        positions = torch.arange(1, n)
        mine = positions[rank::world] if mode == "split" else positions  # "overlap": both ranks score all
        acc = BPBAccumulator(tokens, pos_bytes)
        acc.add(nll[mine], mine, targets=tokens[mine])
        try:
            out[rank] = acc.result().as_dict()
        except PgolfError as e:
            out[rank] = str(e)
    finally:
        dist.destroy_process_group()


def _run_ranks(tmp_path, val_stream, mode):
    tokens, pos_bytes = val_stream
    nll = fake_nll(tokens.numel(), seed=3)
    out = tmp_mp.Manager().dict()
    tmp_mp.spawn(_rank_worker, args=(2, str(tmp_path / "store"), tokens, pos_bytes, nll, mode, out), nprocs=2)
    return dict(out), nll


def test_two_ranks_all_reduce_to_the_single_process_result(tmp_path, val_stream):
    out, nll = _run_ranks(tmp_path, val_stream, "split")
    tokens, pos_bytes = val_stream
    single = BPBAccumulator(tokens, pos_bytes)
    pos = torch.arange(1, tokens.numel())
    single.add(nll[pos], pos)
    expect = single.result().as_dict()
    for rank in (0, 1):
        assert out[rank]["token_count"] == expect["token_count"]
        assert out[rank]["byte_count"] == expect["byte_count"]
        assert math.isclose(out[rank]["loss_sum"], expect["loss_sum"], rel_tol=1e-12)


def test_two_ranks_scoring_the_same_targets_is_caught(tmp_path, val_stream):
    out, _ = _run_ranks(tmp_path, val_stream, "overlap")
    assert all("scored more than once" in out[r] for r in (0, 1))


def test_masked_add_scores_exactly_the_kept_entries(val_stream):
    tokens, pos_bytes = val_stream
    n = tokens.numel()
    nll = fake_nll(n)
    pos = torch.arange(1, n)
    keep = torch.rand(n - 1, generator=torch.Generator().manual_seed(5)) < 0.5
    acc = BPBAccumulator(tokens, pos_bytes)
    acc.add(nll[pos], pos, mask=keep)
    acc.add(torch.where(keep, float("inf"), nll[pos]), pos, mask=~keep)  # masked-out values must not leak in
    r = acc.result()
    assert r.token_count == n - 1 and r.byte_count == int(pos_bytes[1:].sum())
    assert math.isclose(r.loss_sum, float(nll[1:].double().sum()), rel_tol=1e-12)
