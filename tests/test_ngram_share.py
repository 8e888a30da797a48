"""One n-gram build shared by the ranks (pgolf.ngram.share): two gloo ranks, rank 0 builds, rank 1
loads the same arrays from its file; the file is checked on read."""
from __future__ import annotations

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from pgolf.errors import PgolfError
from pgolf.ngram import NgramSettings, build_hints
from pgolf.ngram.share import read_hints, shared_hints, write_hints


def _tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50, size=500)
    return np.concatenate([base, rng.integers(0, 50, size=300), base]).astype(np.int32)


def _rank(rank: int, world: int, init: str, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        h = shared_hints(_tokens(), 50, f"{tmp}/hints.bin", doc_starts=[0, 500, 800], order=[2, 0, 1])
        np.savez(f"{tmp}/{rank}.npz", token=h.token, conf=h.confidence, source=h.source)
        try:  # tokens up to 49 with a vocabulary of 10: rank 0 fails
            shared_hints(_tokens(), 10, f"{tmp}/bad.bin")
            np.savez(f"{tmp}/bad{rank}.npz", error="")
        except PgolfError as e:
            np.savez(f"{tmp}/bad{rank}.npz", error=str(e))
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_one_build_and_its_failure(tmp_path):
    mp.start_processes(_rank, args=(2, f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = (dict(np.load(tmp_path / f"{r}.npz")) for r in range(2))
    assert str(r0["source"]) == "built" and str(r1["source"]) == "loaded"  # one build, not one per rank
    single = build_hints(_tokens(), 50, doc_starts=[0, 500, 800], order=[2, 0, 1])
    for r in (r0, r1):
        np.testing.assert_array_equal(r["token"], single.token)
        np.testing.assert_array_equal(r["conf"], single.confidence)
    assert single.fired > 100
    b0, b1 = (str(np.load(tmp_path / f"bad{r}.npz")["error"]) for r in range(2))
    assert "outside [0, 10)" in b0
    assert "failed on rank 0" in b1 and "outside [0, 10)" in b1  # an error on every rank, not a hang
    assert not (tmp_path / "bad.bin").exists()


def test_the_file_is_checked_on_read(tmp_path):
    h = build_hints(_tokens(), 50)
    path = tmp_path / "h.bin"
    write_hints(path, h)
    back = read_hints(path, len(h.token), h.settings)
    np.testing.assert_array_equal(back.token, h.token)
    with pytest.raises(PgolfError, match="expected n="):
        read_hints(path, len(h.token) + 1, h.settings)
    with pytest.raises(PgolfError, match="expected n="):
        read_hints(path, len(h.token), NgramSettings(order=8))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PgolfError, match="checksum"):
        read_hints(path, len(h.token), h.settings)
    path.write_bytes(bytes(data[:-4]))
    with pytest.raises(PgolfError, match="truncated"):
        read_hints(path, len(h.token), h.settings)
    path.write_bytes(b"junk")
    with pytest.raises(PgolfError, match="not an n-gram hints file"):
        read_hints(path, len(h.token), h.settings)
