import gzip
import json

import numpy as np
import pytest

from bpb_invariant import decoded_document_bytes
from conftest import CASEOPS_MODEL
from pgolf.data import shards
from pgolf.data.encode import document_tokens
from pgolf.data.inspect import inspect_dataset
from pgolf.data.prepare import PrepareOptions, prepare
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import sha256_file
from pgolf.metric.valset import load_val_set


def write_jsonl_gz(path, docs):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, heldout_docs):
    return write_jsonl_gz(tmp_path_factory.mktemp("corpus") / "docs.jsonl.gz", heldout_docs[:240])


def run(corpus, tok, out, **kw):
    opts = dict(inputs=[corpus], tokenizer=tok.path, out_dir=out, val_docs=60, shard_tokens=9000, workers=1, progress=False)
    opts.update(kw)
    return prepare(PrepareOptions(**opts))


def test_shards_hold_bos_prefixed_documents_in_order(tmp_path, corpus, own_tokenizer, heldout_docs):
    docs = heldout_docs[:240]
    manifest = run(corpus, own_tokenizer, tmp_path)
    val = shards.load_split(tmp_path, "val", own_tokenizer.vocab_size)
    train = shards.load_split(tmp_path, "train", own_tokenizer.vocab_size)
    assert np.array_equal(val, np.concatenate([document_tokens(own_tokenizer, d) for d in docs[:60]]))
    assert np.array_equal(train, np.concatenate([document_tokens(own_tokenizer, d) for d in docs[60:]]))
    assert int((val == own_tokenizer.bos_id).sum()) == 60 and own_tokenizer.sp.eos_id() not in val
    assert len(manifest["splits"]["train"]["shards"]) > 1  # the stream was cut at 9000 tokens
    assert all(shards.read_header(tmp_path / s["name"]) == 9000 for s in manifest["splits"]["train"]["shards"][:-1])
    assert not shards.list_sidecar_shards(tmp_path)

    v, t = manifest["splits"]["val"], manifest["splits"]["train"]
    assert (v["docs"], t["docs"]) == (60, 180) and (v["tokens"], t["tokens"]) == (val.size, train.size)
    assert v["text_bytes"] == sum(len(d.encode()) for d in docs[:60])
    assert v["byte_source"] == "lut" and v["scored_tokens"] == val.size - 1
    assert v["scored_bytes"] == decoded_document_bytes(own_tokenizer.sp, val, own_tokenizer.bos_id)
    assert manifest["tokenizer"]["sha256"] == sha256_file(own_tokenizer.path)
    assert manifest["inputs"][0]["sha256"] == sha256_file(corpus)
    for entry in v["shards"] + t["shards"]:
        assert sha256_file(tmp_path / entry["name"]) == entry["sha256"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging or temp left

    vs = load_val_set(tmp_path, own_tokenizer)
    assert vs.byte_source == "lut" and int(vs.position_bytes.sum()) == v["scored_bytes"]


def test_worker_pool_output_is_identical(tmp_path, corpus, own_tokenizer):
    one = run(corpus, own_tokenizer, tmp_path / "one")
    two = run(corpus, own_tokenizer, tmp_path / "two", workers=2, chunk_docs=7)
    strip = lambda m: {k: m["splits"][k]["shards"] for k in m["splits"]}
    assert strip(one) == strip(two)


def test_caseops_val_gets_an_aligned_original_byte_sidecar(tmp_path, corpus, own_caseops_tokenizer, heldout_docs):
    tok = own_caseops_tokenizer
    manifest = run(corpus, tok, tmp_path)
    v = manifest["splits"]["val"]
    assert [s["tokens"] for s in v["sidecars"]] == [s["tokens"] for s in v["shards"]]
    vs = load_val_set(tmp_path, tok)
    assert vs.byte_source == "sidecar"
    # Sidecar bytes are original-text bytes; the normalizer drops each article's trailing newline.
    assert v["scored_bytes"] == sum(len(d.strip().encode()) for d in heldout_docs[:60])
    assert int(vs.position_bytes[vs.tokens == tok.bos_id].sum()) == 0


def test_real_caseops_export_scores_original_fineweb_bytes(tmp_path, fineweb_docs):
    if not CASEOPS_MODEL.is_file():
        pytest.skip("CaseOps model not in ../shared")
    docs = fineweb_docs[:80]
    corpus = write_jsonl_gz(tmp_path / "fw.jsonl.gz", docs)
    manifest = run(corpus, load_tokenizer(CASEOPS_MODEL), tmp_path / "out", val_docs=40, shard_tokens=10**8)
    assert manifest["splits"]["val"]["scored_bytes"] == sum(len(d.encode()) for d in docs[:40])


def test_short_input_is_an_error_and_writes_nothing(tmp_path, corpus, own_tokenizer):
    with pytest.raises(PgolfError, match="hold 240 documents, fewer than --val-docs 500"):
        run(corpus, own_tokenizer, tmp_path, val_docs=500)
    assert list(tmp_path.iterdir()) == []


def test_existing_export_needs_overwrite_and_a_failed_run_keeps_it(tmp_path, corpus, own_tokenizer, heldout_docs):
    first = run(corpus, own_tokenizer, tmp_path, shard_tokens=4000)
    with pytest.raises(PgolfError, match="already holds shards .* pass --overwrite"):
        run(corpus, own_tokenizer, tmp_path)

    bad = tmp_path.parent / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": d}) + "\n" for d in heldout_docs[:150]) + "{oops\n")
    with pytest.raises(PgolfError, match="bad.jsonl:151: invalid JSON"):
        run(bad, own_tokenizer, tmp_path, overwrite=True)
    assert json.loads((tmp_path / "manifest.json").read_text()) == first  # the old export is untouched
    inspect_dataset(tmp_path, own_tokenizer.path)

    second = run(corpus, own_tokenizer, tmp_path, overwrite=True)  # fewer, larger shards
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"manifest.json"} | {s["name"] for k in ("val", "train") for s in second["splits"][k]["shards"]}


def test_inspect_reports_and_detects_tampering(tmp_path, corpus, own_tokenizer):
    manifest = run(corpus, own_tokenizer, tmp_path)
    report = inspect_dataset(tmp_path, own_tokenizer.path)
    assert report["val"]["scored_bytes"] == manifest["splits"]["val"]["scored_bytes"]
    assert report["manifest_files_verified"] == len(manifest["splits"]["val"]["shards"]) + len(manifest["splits"]["train"]["shards"])
    target = tmp_path / manifest["splits"]["train"]["shards"][0]["name"]
    raw = bytearray(target.read_bytes())
    raw[2000] ^= 1
    target.write_bytes(bytes(raw))
    with pytest.raises(shards.ShardError, match="sha256 differs"):
        inspect_dataset(tmp_path, own_tokenizer.path)


def test_bad_options(tmp_path, corpus, own_tokenizer):
    with pytest.raises(PgolfError, match="--val-docs"):
        run(corpus, own_tokenizer, tmp_path, val_docs=0)
    with pytest.raises(PgolfError, match="--shard-tokens"):
        run(corpus, own_tokenizer, tmp_path, shard_tokens=0)
    with pytest.raises(PgolfError, match="tokenizer .*missing.model does not exist"):
        run(corpus, type(own_tokenizer)(path=tmp_path / "missing.model", sp=None), tmp_path)


def test_a_val_split_missing_a_shard_is_refused(tmp_path, corpus, own_tokenizer):
    """Without the check, the remaining shards would be scored as the val set (a different number)."""
    manifest = run(corpus, own_tokenizer, tmp_path, shard_tokens=4_000)
    val_shards = [e["name"] for e in manifest["splits"]["val"]["shards"]]
    assert len(val_shards) > 1
    (tmp_path / val_shards[-1]).unlink()
    with pytest.raises(PgolfError, match=f"val shards on disk are not the ones it lists \\(missing: {val_shards[-1]}"):
        load_val_set(tmp_path, own_tokenizer)
