"""Train/val document overlap (F10): hashing, straddling documents, the planted leak found with its position."""
from __future__ import annotations

import numpy as np
import pytest

from pgolf.data import shard_writer, shards
from pgolf.data.overlap import hash_documents, scan_overlap, tokens_per_step

BOS = 1


def _docs(rng, n, lo=5, hi=300):
    return [rng.integers(2, 1024, size=int(rng.integers(lo, hi)), dtype=np.uint16) for _ in range(n)]


def _stream(docs):
    return np.concatenate([np.concatenate([[BOS], d]) for d in docs]).astype(np.uint16)


def _write(directory, split, stream, shard_tokens):
    for i, lo in enumerate(range(0, stream.size, shard_tokens)):
        shard_writer.write_shard(directory / shards.shard_name(split, i), stream[lo:lo + shard_tokens])


def test_hash_is_per_document_content_and_carries_tails():
    rng = np.random.default_rng(0)
    docs = _docs(rng, 50)
    stream = _stream(docs)
    full, tail = hash_documents(stream, BOS)
    assert full.hashes.size == 50 and tail == stream.size and np.unique(full.hashes).size == 50
    shifted, _ = hash_documents(np.concatenate([stream[:1], _stream(docs[::-1])]), BOS)  # order does not matter
    assert set(shifted.hashes.tolist()) == set(full.hashes.tolist())
    part, tail = hash_documents(stream[:1000], BOS, complete_tail=False)  # the cut document is left for the next array
    assert stream[tail - 1] == BOS and part.hashes.tolist() == full.hashes[:part.hashes.size].tolist()
    one_changed = [d.copy() for d in docs]
    one_changed[7][3] ^= 5
    changed, _ = hash_documents(_stream(one_changed), BOS)
    assert (changed.hashes != full.hashes).sum() == 1
    swapped = [d.copy() for d in docs]
    swapped[9][[0, 1]] = swapped[9][[1, 0]]  # same multiset of tokens, different order
    if swapped[9][0] != swapped[9][1]:
        assert hash_documents(_stream(swapped), BOS)[0].hashes[9] != full.hashes[9]


@pytest.mark.parametrize("shard_tokens", [251, 997, 4096, 100_000])  # 251: documents span several shards
def test_planted_val_document_is_found_with_its_position(tmp_path, shard_tokens, monkeypatch):
    monkeypatch.setattr("pgolf.data.overlap.CHUNK_TOKENS", 700)  # many chunks: documents straddle chunks and shards
    rng = np.random.default_rng(1)
    val_docs, train_docs = _docs(rng, 40), _docs(rng, 400)
    _write(tmp_path, "val", _stream(val_docs), 10**6)
    clean = _stream(train_docs)
    _write(tmp_path, "train", clean, shard_tokens)
    report = scan_overlap(tmp_path)
    assert report.clean and report.train_docs == 400 and report.val_docs == 40 and report.train_tokens == clean.size

    for p in tmp_path.glob("fineweb_train_*.bin"):
        p.unlink()
    planted = train_docs[:250] + [val_docs[17]] + train_docs[250:]
    stream = _stream(planted)
    _write(tmp_path, "train", stream, shard_tokens)
    offset = sum(d.size + 1 for d in train_docs[:250]) + 1  # the planted document's first token
    assert np.array_equal(stream[offset:offset + val_docs[17].size], val_docs[17])
    per_step = tokens_per_step(batch_tokens=512, world=2, grad_accum=2)
    report = scan_overlap(tmp_path, tokens_per_step=per_step)
    assert scan_overlap(tmp_path, tokens_per_step=per_step, workers=2).as_dict() | {"seconds": 0, "tokens_per_second": 0} == \
        report.as_dict() | {"seconds": 0, "tokens_per_second": 0}
    assert report.hits == 1 and report.val_docs_hit == 1 and not report.clean
    assert report.first_global_offset == offset
    assert report.first_shard == shards.shard_name("train", offset // shard_tokens)
    assert report.first_offset == offset % shard_tokens
    assert report.first_step == offset // 516 + 1
    assert "train documents equal 1 val documents" in report.summary()


def test_last_document_and_prefix_limit(tmp_path):
    rng = np.random.default_rng(2)
    val_docs, train_docs = _docs(rng, 10), _docs(rng, 30)
    _write(tmp_path, "val", _stream(val_docs), 10**6)
    stream = _stream(train_docs + [val_docs[0]])  # at the very end of the stream
    _write(tmp_path, "train", stream, 1000)
    assert scan_overlap(tmp_path).hits == 1
    cut = scan_overlap(tmp_path, max_train_tokens=stream.size - val_docs[0].size - 5)
    assert cut.hits == 0 and cut.train_tokens == stream.size - val_docs[0].size - 5
    assert scan_overlap(tmp_path, max_train_tokens=2500, workers=2).train_tokens == 2500


def test_prepare_records_the_scan(tiny_data, bbc_docs):
    """The embedded BBC corpus holds a real duplicate: article 102 (train) repeats article 24 (val)."""
    import json

    data, _ = tiny_data
    assert bbc_docs[102] == bbc_docs[24] and bbc_docs[:40].count(bbc_docs[24]) == 1
    overlap = json.loads((data / "manifest.json").read_text())["overlap"]
    assert not overlap["clean"] and overlap["hits"] == 1 and overlap["val_docs"] == 40
    val = shards.load_split(data, "val")
    bos = np.flatnonzero(val == BOS)
    doc24 = val[bos[24] + 1:bos[25]]
    train = shards.load_split(data, "train")
    at = overlap["first_global_offset"]
    assert np.array_equal(train[at:at + doc24.size], doc24) and train[at - 1] == BOS
    assert train[at + doc24.size] == BOS and (train[:at] == BOS).sum() == 102 - 40 + 1
