"""The GPTQ calibration loader: shuffled windows, per-rank shards, PCG64(rank) determinism."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from pgolf.data import shard_writer, shards
from pgolf.data.calibration import ShuffledSequenceLoader
from pgolf.data.shards import ShardError
from pgolf.errors import PgolfError

VOCAB = 1024


def _files(tiny_data):
    return shards.list_token_shards(tiny_data[0], "train")


def _loader(tiny_data, **kw):
    return ShuffledSequenceLoader(_files(tiny_data), **{**dict(rank=0, world=2, seq_len=512, vocab_size=VOCAB), **kw})


def test_same_rank_and_seed_give_the_same_batches(tiny_data):
    a, b = _loader(tiny_data), _loader(tiny_data)
    for _ in range(5):
        (xa, ya), (xb, yb) = a.next_batch(8), b.next_batch(8)
        assert xa.shape == ya.shape == (8, 512) and xa.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(xa[:, 1:], ya[:, :-1])
    other = _loader(tiny_data, seed=7)
    assert not torch.equal(other.next_batch(8)[0], _loader(tiny_data).next_batch(8)[0])
    assert torch.equal(_loader(tiny_data, seed=7).next_batch(8)[0], _loader(tiny_data, seed=7).next_batch(8)[0])


def test_ranks_own_disjoint_shards_and_windows(tiny_data):
    files = _files(tiny_data)
    seen = {}
    for rank in range(3):
        loader = _loader(tiny_data, rank=rank, world=3)
        assert loader.files == files[rank::3]
        windows = {(loader.files[si], start) for si, start in loader.take_windows(60)}
        assert len(windows) == 60  # no window twice before the shards are used up
        seen[rank] = windows
    for r in range(3):
        for q in range(r + 1, 3):
            assert not {p for p, _ in seen[r]} & {p for p, _ in seen[q]}


def test_windows_are_the_shard_tokens_and_each_shard_is_a_random_permutation(tiny_data):
    loader = _loader(tiny_data, rank=1, world=2, seq_len=512)
    data = [shards.read_shard(f) for f in loader.files]
    total = sum(len(s) for s in loader._starts)
    counts = [len(s) for s in loader._starts]
    taken = loader.take_windows(total)
    by_shard = defaultdict(list)
    for si, start in taken:
        by_shard[si].append(start)
    for si, starts in by_shard.items():
        phase = min(starts) % 512
        assert 0 <= phase < 512 and sorted(starts) == list(range(phase, phase + 512 * counts[si], 512))
        assert starts != sorted(starts)  # shuffled
        assert max(starts) + 513 <= data[si].size
    # after every window is used, all shards are reshuffled and drawing goes on
    again = loader.take_windows(5)
    assert len(again) == 5 and not any(loader._starts[si] == [] for si in range(len(loader.files)))
    x, y = _loader(tiny_data, rank=1, world=2, seq_len=512).next_batch(3)
    for row, (si, start) in zip(range(3), taken[:3]):
        assert np.array_equal(x[row].numpy(), data[si][start:start + 512])
        assert np.array_equal(y[row].numpy(), data[si][start + 1:start + 513])


def test_bad_setups_are_clear_errors(tiny_data, tmp_path):
    with pytest.raises(PgolfError, match="rank 6 of 8 owns no train shard"):
        _loader(tiny_data, rank=6, world=8)
    with pytest.raises(PgolfError, match="hold no full window"):
        _loader(tiny_data, seq_len=100_000)
    bad = tmp_path / "fineweb_train_000007.bin"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(ShardError, match="fineweb_train_000007.bin"):
        ShuffledSequenceLoader([*_files(tiny_data), bad], rank=0, world=1, seq_len=64, vocab_size=VOCAB)
    big = tmp_path / "fineweb_train_000000.bin"
    shard_writer.write_shard(big, np.full(5000, 1500, np.uint16))
    with pytest.raises(ShardError, match="token id 1500 out of range"):
        ShuffledSequenceLoader([big], rank=0, world=1, seq_len=64, vocab_size=VOCAB).next_batch(2)


def test_each_shard_is_drawn_in_proportion_to_its_remaining_windows(tiny_data):
    loader = _loader(tiny_data, rank=1, world=2)
    rng, probs = loader.rng, []

    class Spy:
        def choice(self, n, p):
            left = np.array([len(s) for s in loader._starts], dtype=np.float64)
            probs.append(np.allclose(p, left / left.sum()))
            return rng.choice(n, p=p)

        def __getattr__(self, name):
            return getattr(rng, name)

    loader.rng = Spy()
    assert sum(len(s) for s in loader._starts) < 300
    taken = loader.take_windows(300)  # past one full pass (264 windows), so a reshuffle too
    assert len(probs) == 300 and all(probs)
    assert len({si for si, _ in taken[:40]}) == 3  # shards interleave
