import os

import numpy as np
import pytest

from pgolf.data import shard_writer, shards
from pgolf.data.shards import ShardError


def _raw(path, header_ints, payload: bytes):
    header = np.zeros(256, dtype="<i4")
    header[: len(header_ints)] = header_ints
    path.write_bytes(header.tobytes() + payload)


def test_roundtrip_is_exact_and_memory_mapped(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, size=1237, dtype=np.uint16)
    path = tmp_path / shards.shard_name("train", 3)
    shard_writer.write_shard(path, values)
    assert path.stat().st_size == 1024 + 2 * values.size
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[:3].tolist() == [20240520, 1, values.size] and not header[3:].any()
    got = shards.read_shard(path)
    assert isinstance(got, np.memmap) and np.array_equal(got, values)


def test_empty_shard_roundtrips(tmp_path):
    shard_writer.write_shard(tmp_path / "fineweb_val_000000.bin", np.zeros(0, np.uint16))
    assert shards.read_shard(tmp_path / "fineweb_val_000000.bin", vocab_size=8).size == 0


def test_token_listing_never_picks_up_sidecars(tmp_path):
    for name in ["fineweb_val_000001.bin", "fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin",
                 "fineweb_val_bytes_000001.bin", "fineweb_train_000000.bin", "fineweb_val_000000.bin.tmp",
                 "fineweb_val_0.bin", "notes.txt"]:
        shard_writer.write_shard(tmp_path / name, [1, 2]) if name.endswith(".bin") else (tmp_path / name).write_text("x")
    assert [p.name for p in shards.list_token_shards(tmp_path, "val")] == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    assert [p.name for p in shards.list_token_shards(tmp_path, "train")] == ["fineweb_train_000000.bin"]
    assert [p.name for p in shards.list_sidecar_shards(tmp_path)] == ["fineweb_val_bytes_000000.bin", "fineweb_val_bytes_000001.bin"]


@pytest.mark.parametrize("case, make, fault", [
    ("header cut short", lambda p: p.write_bytes(b"\0" * 100), "shorter than the 1024-byte header"),
    ("wrong magic", lambda p: _raw(p, [12345, 1, 2], b"\0" * 4), "wrong magic 12345"),
    ("wrong version", lambda p: _raw(p, [20240520, 7, 2], b"\0" * 4), "unsupported version 7"),
    ("negative count", lambda p: _raw(p, [20240520, 1, -5], b""), "negative token count"),
    ("truncated payload", lambda p: _raw(p, [20240520, 1, 10], b"\0" * 7), "truncated: header promises 10 tokens"),
    ("trailing bytes", lambda p: _raw(p, [20240520, 1, 2], b"\0" * 6), "corrupt: 2 bytes beyond the 2 tokens"),
])
def test_bad_shards_get_clear_errors_naming_the_file(tmp_path, case, make, fault):
    path = tmp_path / "fineweb_train_000000.bin"
    make(path)
    with pytest.raises(ShardError) as e:
        shards.read_shard(path)
    assert str(path) in str(e.value) and fault in str(e.value), str(e.value)


def test_out_of_range_token_is_an_error(tmp_path):
    path = tmp_path / "fineweb_val_000000.bin"
    shard_writer.write_shard(path, [1, 5, 1023, 1024, 7])
    assert shards.read_shard(path, vocab_size=1025).size == 5
    with pytest.raises(ShardError, match=r"token id 1024 out of range for vocab_size 1024 \(first bad id at index 3\)"):
        shards.read_shard(path, vocab_size=1024)


def test_missing_shard_and_missing_directory(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        shards.read_header(tmp_path / "fineweb_val_000000.bin")
    with pytest.raises(shards.PgolfError, match="does not exist"):
        shards.list_token_shards(tmp_path / "nope", "val")
    with pytest.raises(shards.PgolfError, match="no fineweb_val_NNNNNN.bin shards"):
        shards.load_split(tmp_path, "val")


def test_write_refuses_values_outside_uint16_and_leaves_nothing(tmp_path):
    path = tmp_path / "fineweb_val_000000.bin"
    with pytest.raises(ValueError, match="fit in uint16"):
        shard_writer.write_shard(path, [1, 70000])
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "fineweb_val_000000.bin"
    shard_writer.write_shard(path, [1, 2, 3])

    class Boom(Exception):
        pass

    def explode(fd):  # dies after the bytes were written, before the rename
        raise Boom

    monkeypatch.setattr(os, "fsync", explode)
    with pytest.raises(Boom):
        shard_writer.write_shard(path, [9, 9, 9, 9])
    monkeypatch.undo()
    assert shards.read_shard(path).tolist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_sidecar_must_pair_with_val_shards(tmp_path):
    shard_writer.write_shard(tmp_path / "fineweb_val_000000.bin", [1, 10, 11, 1, 12])
    tokens = shards.load_split(tmp_path, "val")
    with pytest.raises(shards.PgolfError, match="0 fineweb_val_bytes shards for 1 fineweb_val shards"):
        shards.load_sidecar(tmp_path, tokens, bos_id=1)
    shard_writer.write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [0, 3, 2])
    with pytest.raises(ShardError, match="holds 3 entries but its token shard fineweb_val_000000.bin holds 5"):
        shards.load_sidecar(tmp_path, tokens, bos_id=1)
    shard_writer.write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [0, 3, 2, 4, 1])
    with pytest.raises(shards.PgolfError, match="credits 4 bytes to the BOS at val position 3"):
        shards.load_sidecar(tmp_path, tokens, bos_id=1)
    shard_writer.write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [0, 0, 0, 0, 0])
    with pytest.raises(ShardError, match="fineweb_val_bytes_000000.bin: .*credits 0 bytes to every val token"):
        shards.load_sidecar(tmp_path, tokens, bos_id=1)
    shard_writer.write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [0, 3, 2, 0, 1])
    assert shards.load_sidecar(tmp_path, tokens, bos_id=1).tolist() == [0, 3, 2, 0, 1]


def test_a_gap_in_the_shard_numbers_is_a_missing_shard(tmp_path):
    for i in (0, 1, 3):
        shard_writer.write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", [1, 2])
    shard_writer.write_shard(tmp_path / "fineweb_val_000001.bin", [1, 2])
    with pytest.raises(ShardError, match="fineweb_train_000002.bin: missing: the directory holds fineweb_train_000003"):
        shards.list_token_shards(tmp_path, "train")
    with pytest.raises(ShardError, match="fineweb_val_000000.bin: missing"):
        shards.load_split(tmp_path, "val")
    assert len(shard_writer.list_any_shards(tmp_path)) == 4  # what an export would replace, gaps or not
