"""The document-packing loader on real prepared shards (tiny_data: 6 train shards of BBC text,
each starting mid-document, documents up to ~5k tokens)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.data import shard_writer, shards
from pgolf.data.packing import DocumentPackingLoader, _first_bos, build_cu_seqlens, segment_starts
from pgolf.data.shards import ShardError
from pgolf.errors import PgolfError

BOS, VOCAB = 1, 1024


def _files(tiny_data):
    return shards.list_token_shards(tiny_data[0], "train")


def _loader(tiny_data, **kw):
    args = dict(rank=0, world=2, local_tokens=4000, seq_len=256, vocab_size=VOCAB, cu_bucket=16)
    return DocumentPackingLoader(_files(tiny_data), **{**args, **kw})


def _reference_segments(inputs: np.ndarray, seq_len: int) -> list[int]:
    """Token by token: a segment starts at 0, at every BOS, and every seq_len tokens into a document."""
    starts, since = [], None
    for i, tok in enumerate(inputs.tolist()):
        if i == 0 or tok == BOS or since == seq_len:
            starts.append(i)
            since = 0
        since += 1
    return starts


def _reference_steps(files, world, local, n_steps):
    """Expected (shard, global start) of each step, from the spec's cursor rules."""
    data = [shards.read_shard(f) for f in files]
    span = world * (local + 1)
    out, idx, cur = [], 0, None
    while len(out) < n_steps:
        if cur is None:
            cur = int(np.flatnonzero(data[idx] == BOS)[0])
        if cur + span > data[idx].size:
            idx, cur = (idx + 1) % len(files), None
            continue
        out.append((idx, cur))
        cur += span
    return data, out


def test_segment_starts_cut_long_documents_from_their_start():
    # documents [0,5) [5,30) [30,40): the 25-token one is cut at 5, 13, 21, 29; the last at 30, 38
    assert segment_starts(np.array([0, 5, 30]), 40, 8).tolist() == [0, 5, 13, 21, 29, 30, 38]
    # a row starting mid-document gets a segment at 0; seq_len <= 0 never cuts
    assert segment_starts(np.array([3]), 10, 4).tolist() == [0, 3, 7]
    assert segment_starts(np.array([], np.int64), 10, 4).tolist() == [0, 4, 8]
    assert segment_starts(np.array([3]), 10, 0).tolist() == [0, 3]


def test_first_bos_scans_across_chunks():
    tokens = np.full(50, 7, np.uint16)
    assert _first_bos(tokens, 1, chunk=4) == -1
    tokens[[13, 30]] = 1
    assert _first_bos(tokens, 1, chunk=4) == 13 and _first_bos(tokens, 1) == 13


def test_cu_seqlens_are_padded_with_the_row_length_to_the_bucket():
    cu, n = build_cu_seqlens(np.array([0, 5, 30]), 40, 8, bucket=4)
    assert n == 7 and cu.dtype == np.int32 and cu.tolist() == [0, 5, 13, 21, 29, 30, 38, 40]
    cu, n = build_cu_seqlens(np.array([0, 5, 30]), 40, 8, bucket=64)
    assert cu.size == 64 and cu[:7].tolist() == [0, 5, 13, 21, 29, 30, 38] and (cu[7:] == 40).all()
    cu, _ = build_cu_seqlens(np.array([0]), 40, 8, bucket=64, min_entries=128)
    assert cu.size == 128
    # the floor is the static length while the boundaries fit in it, then buckets take over
    assert build_cu_seqlens(np.array([0]), 40, 4, bucket=4, min_entries=11)[0].size == 11
    assert build_cu_seqlens(np.array([0]), 44, 4, bucket=4, min_entries=11)[0].size == 12


@pytest.mark.parametrize("seq_len", [64, 256, 2048])
def test_cu_seqlens_equal_an_independent_computation_from_bos(tiny_data, seq_len):
    for rank in range(2):
        loader = _loader(tiny_data, rank=rank, seq_len=seq_len)
        for _ in range(40):  # more than one pass over the 6 shards
            b = loader.next_batch()
            x, y, cu = b.inputs[0].numpy(), b.targets[0].numpy(), b.cu_seqlens.numpy()
            assert b.inputs.shape == b.targets.shape == (1, 4000) and b.inputs.dtype == torch.int64
            assert np.array_equal(x[1:], y[:-1])
            ref = _reference_segments(x, seq_len)
            assert b.num_segments == len(ref) and cu[:len(ref)].tolist() == ref
            assert (cu[len(ref):] == 4000).all() and cu.size % 16 == 0 and cu.size > len(ref)
            assert np.diff(cu).max() <= seq_len and b.max_seqlen == seq_len
            assert b.cu_seqlens.dtype == torch.int32


def test_rank_spans_are_disjoint_and_cover_the_step(tiny_data):
    world, local, n_steps = 3, 3000, 45
    data, expected = _reference_steps(_files(tiny_data), world, local, n_steps)
    shard_seq = [i for i, _ in expected]
    assert set(shard_seq) == set(range(6)) and any(b < a for a, b in zip(shard_seq, shard_seq[1:]))  # all, then a wrap
    loaders = [_loader(tiny_data, rank=r, world=world, local_tokens=local) for r in range(world)]
    for idx, start in expected:
        rows = []
        for loader in loaders:
            b = loader.next_batch()
            rows.append(np.append(b.inputs[0].numpy(), b.targets[0, -1].item()))
        assert np.array_equal(np.concatenate(rows), data[idx][start:start + world * (local + 1)])


def _run(loader, n, seq_lens=None):
    out = []
    for i in range(n):
        b = loader.next_batch(None if seq_lens is None else seq_lens[i])
        out.append((b.inputs.clone(), b.cu_seqlens.clone()))
    return out


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(c, v) for (x, c), (u, v) in zip(a, b))


@pytest.mark.parametrize("prefetch_a, prefetch_b", [(0, 0), (2, 2), (2, 0), (0, 3)])
def test_resume_is_exact(tiny_data, prefetch_a, prefetch_b):
    seq_lens = [128] * 9 + [256] * 12 + [512] * 30
    with _loader(tiny_data, prefetch=prefetch_a) as straight:
        whole = _run(straight, 51, seq_lens)
    with _loader(tiny_data, prefetch=prefetch_a) as first:
        head = _run(first, 17, seq_lens)
        state = first.state_dict()
    with _loader(tiny_data, prefetch=prefetch_b) as second:
        second.load_state_dict(state)
        tail = _run(second, 34, seq_lens[17:])
    assert _same(head + tail, whole)


def test_state_is_shared_by_ranks_and_seq_len_never_changes_the_data(tiny_data):
    a = _loader(tiny_data, rank=0, seq_len=128)
    _run(a, 11)
    with _loader(tiny_data, rank=1, seq_len=1024, prefetch=2) as b:
        b.load_state_dict(a.state_dict())  # a rank-0 checkpoint resumes rank 1
        got = _run(b, 20, [64] * 5 + [2048] * 15)
        assert len(b._queue) == 2  # two batches are being built ahead, yet the state counts only consumed ones
        sync = _loader(tiny_data)
        _run(sync, 31)
        assert b.state_dict() == sync.state_dict()
    ref = _run(_loader(tiny_data, rank=1), 31)[11:]
    assert all(torch.equal(x, u) for (x, _), (u, _) in zip(got, ref))


def test_padding_is_static_and_warm_up_lengths_cover_it(tiny_data):
    loose = _loader(tiny_data, seq_len=128, cu_bucket=2)  # rows here hold 32-36 segments
    seen = {loose.next_batch().cu_seqlens.numel() for _ in range(40)}
    assert all(s % 2 == 0 for s in seen) and len(seen) > 1  # the records' buckets: a few shapes
    lengths = loose.cu_lengths(128, up_to=max(seen))
    assert seen <= set(lengths) and lengths[0] == 34  # ceil(4000 / 128) + 1 = 33 entries at least -> 34
    floored = _loader(tiny_data, seq_len=128, cu_bucket=2, cu_min_entries=max(seen))
    assert {floored.next_batch().cu_seqlens.numel() for _ in range(40)} == {max(seen)}  # one static shape
    warm = loose.synthetic_cu_seqlens(128, 48)
    assert warm.numel() == 48 and warm[0] == 0 and warm[-1] == 4000 and torch.all(torch.diff(warm) >= 0)
    assert torch.diff(warm).max() <= 128
    with pytest.raises(PgolfError, match="cannot hold"):
        loose.synthetic_cu_seqlens(128, 32)


def test_warm_up_lengths_at_the_record_shape(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    shard_writer.write_shard(path, np.r_[1, np.full(98_304, 5)].astype(np.uint16))
    loader = DocumentPackingLoader([path], rank=0, world=1, local_tokens=98_304, seq_len=2048, vocab_size=VOCAB)
    # 98,304 / 1024 = 96 segments at least -> 97 entries -> the 128 bucket; the records warm 64..256
    assert loader.cu_lengths(1024, 256) == [128, 192, 256] and loader.cu_lengths(2048, 256) == [64, 128, 192, 256]
    assert loader.cu_lengths(3072, 64) == [64]
    b = loader.next_batch()
    assert b.num_segments == 48 and b.cu_seqlens.numel() == 64 and b.cu_seqlens[48:].eq(98_304).all()
    floored = DocumentPackingLoader([path], rank=0, world=1, local_tokens=98_304, seq_len=2048, vocab_size=VOCAB,
                                    cu_min_entries=100)
    assert floored.cu_lengths(1024, 256) == [100, 128, 192, 256] and floored.next_batch().cu_seqlens.numel() == 100


def test_every_header_is_checked_at_construction(tiny_data, tmp_path):
    files = _files(tiny_data)
    bad = tmp_path / "fineweb_train_000099.bin"
    bad.write_bytes(files[0].read_bytes()[:-3])
    with pytest.raises(ShardError, match="fineweb_train_000099.bin"):
        DocumentPackingLoader([*files, bad], rank=0, world=2, local_tokens=4000, seq_len=256, vocab_size=VOCAB)


def test_bad_data_gets_clear_errors(tiny_data, tmp_path):
    files = _files(tiny_data)
    with pytest.raises(PgolfError, match="no train shard holds one step"):
        DocumentPackingLoader(files, rank=0, world=8, local_tokens=8000, seq_len=256, vocab_size=VOCAB)
    no_bos = tmp_path / "fineweb_train_000000.bin"
    shard_writer.write_shard(no_bos, np.full(10_000, 7, np.uint16))
    with pytest.raises(ShardError, match="no BOS"):
        DocumentPackingLoader([no_bos], rank=0, world=1, local_tokens=100, seq_len=64, vocab_size=VOCAB).next_batch()
    big = tmp_path / "fineweb_train_000001.bin"
    shard_writer.write_shard(big, np.r_[1, np.full(500, 2000)].astype(np.uint16))
    with pytest.raises(ShardError, match="token id 2000 out of range"):
        DocumentPackingLoader([big], rank=0, world=1, local_tokens=100, seq_len=64, vocab_size=VOCAB).next_batch()
    loader = _loader(tiny_data)
    state = loader.state_dict()
    with pytest.raises(PgolfError, match="'local_tokens' does not match"):
        _loader(tiny_data, local_tokens=3000).load_state_dict(state)
    with pytest.raises(PgolfError, match="'files' does not match"):
        DocumentPackingLoader(files[:-1], rank=0, world=2, local_tokens=4000, seq_len=256,
                              vocab_size=VOCAB).load_state_dict(state)
