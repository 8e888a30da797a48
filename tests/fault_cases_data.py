"""Fault table: data, tokenizer, eval and artifact commands (see tests/faults.py).

Set-ups plant the fault in the case's copy of the demo run (cwd of the command): `tok.model`,
`docs.jsonl`, `data/` (val shard 000000, several train shards, manifest.json) and `runs/t/model.pgolf`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from faults import ARTIFACT, Fault

DATA = Path("data")
QUIET = ["--quiet", "--workers", "1"]


# --- set-ups ------------------------------------------------------------------------------------


def write(name: str, text: str):
    def setup(root: Path) -> None:
        (root / name).write_text(text, encoding="utf-8")
    return setup


def make_dir(name: str):
    return lambda root: (root / name).mkdir(parents=True)


def read_only_dir(name: str):
    def setup(root: Path) -> None:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions (the OSError path is covered by the is-a-file cases)")
        (root / name).mkdir()
        (root / name).chmod(0o555)
    return setup


def other_tokenizer(root: Path, name: str = "tok_other.model") -> Path:
    """The demo tokenizer with two pieces swapped: the same vocabulary size, a different model
    (its byte LUT differs), so only the recorded sha256 can tell them apart."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString((root / "tok.model").read_bytes())
    i, j = 300, 301
    m.pieces[i].piece, m.pieces[j].piece = m.pieces[j].piece + "x", m.pieces[i].piece
    (root / name).write_bytes(m.SerializeToString())
    return root / name


def tokenizer_replaced_in_place(root: Path) -> None:
    """tok.model swapped for another one at the same path, and no manifest to catch it: only the
    artifact's recorded sha256 can."""
    other = other_tokenizer(root)
    os.replace(other, root / "tok.model")
    (root / DATA / "manifest.json").unlink()


def artifact_meta(**changes):
    """Rewrite the artifact with changed run metadata and a valid checksum (a crafted file)."""
    def setup(root: Path) -> None:
        from pgolf.export.artifact import decode_artifact, encode_artifact

        path = root / ARTIFACT
        art = decode_artifact(path.read_bytes())
        art.meta.update(changes)
        path.write_bytes(encode_artifact(art)[0])  # the plain layout: any valid file will do
    return setup


def manifest_text(text: str):
    return write(str(DATA / "manifest.json"), text)


def manifest_edit(edit):
    def setup(root: Path) -> None:
        path = root / DATA / "manifest.json"
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))
    return setup


def _shard(path: Path, values) -> None:
    from pgolf.data.shard_writer import write_shard

    write_shard(path, np.asarray(values, dtype=np.uint16))


def sidecar(kind: str):
    """A val byte sidecar beside the demo's val shard: one entry short, or all zeros."""
    def setup(root: Path) -> None:
        from pgolf.data.shards import read_shard

        val = np.asarray(read_shard(root / DATA / "fineweb_val_000000.bin"))
        values = np.ones(val.size - 1) if kind == "short" else np.zeros(val.size)
        _shard(root / DATA / "fineweb_val_bytes_000000.bin", values)
        (root / DATA / "manifest.json").unlink()  # the manifest would name the extra file first
    return setup


def train_shard_gap(root: Path) -> None:
    (root / DATA / "fineweb_train_000001.bin").unlink()
    (root / DATA / "manifest.json").unlink()  # without it, only the numbering shows the gap


SURROGATE = '{"text": "a lone \\ud800 surrogate"}\n'


# --- the table ----------------------------------------------------------------------------------

CASES = [
    Fault("eval-missing-artifact", ["eval", "runs/t/missing.pgolf"], "missing.pgolf"),
    Fault("eval-unknown-flag", ["eval", str(ARTIFACT), "--no-such-flag"], "--no-such-flag"),
    # eval flags
    Fault("eval-seq-len-negative", ["eval", str(ARTIFACT), "--seq-len", "-5"], "--seq-len"),
    Fault("eval-seq-len-zero", ["eval", str(ARTIFACT), "--seq-len", "0"], "--seq-len"),
    Fault("eval-seq-len-beyond-val", ["eval", str(ARTIFACT), "--seq-len", "100000"], "--seq-len 100000"),
    Fault("eval-stride-negative", ["eval", str(ARTIFACT), "--stride", "-1"], "--stride"),
    Fault("eval-stride-beyond-window", ["eval", str(ARTIFACT), "--stride", "1000"], "--stride 1000"),
    Fault("eval-batch-tokens-zero", ["eval", str(ARTIFACT), "--batch-tokens", "0"], "--batch-tokens"),
    # a different tokenizer with the same vocabulary size
    Fault("eval-other-tokenizer", ["eval", str(ARTIFACT), "--tokenizer", "tok_other.model"], "tok_other.model",
          setup=other_tokenizer),
    Fault("inspect-other-tokenizer", ["data", "inspect", "data", "--tokenizer", "tok_other.model"], "tok_other.model",
          setup=other_tokenizer),
    Fault("eval-tokenizer-replaced", ["eval", str(ARTIFACT)], "was trained with", setup=tokenizer_replaced_in_place),
    # crafted artifact metadata behind a valid checksum
    Fault("eval-meta-seq-len-text", ["eval", str(ARTIFACT)], "seq_len", setup=artifact_meta(seq_len="abc")),
    Fault("eval-meta-seq-len-float", ["eval", str(ARTIFACT)], "seq_len", setup=artifact_meta(seq_len=2.5)),
    Fault("eval-meta-seq-len-negative", ["eval", str(ARTIFACT)], "seq_len", setup=artifact_meta(seq_len=-4)),
    Fault("eval-meta-tokenizer-sha-bad", ["eval", str(ARTIFACT)], "tokenizer_sha256",
          setup=artifact_meta(tokenizer_sha256=12)),
    # manifests
    Fault("inspect-manifest-not-json", ["data", "inspect", "data"], "manifest.json", setup=manifest_text("{not json")),
    Fault("inspect-manifest-not-object", ["data", "inspect", "data"], "manifest.json", setup=manifest_text("[1, 2]")),
    Fault("inspect-manifest-bad-field", ["data", "inspect", "data"], "'tokens'",
          setup=manifest_edit(lambda m: m["splits"]["val"]["shards"][0].update(tokens="many"))),
    Fault("inspect-manifest-path-name", ["data", "inspect", "data"], "plain name",
          setup=manifest_edit(lambda m: m["splits"]["val"]["shards"][0].update(name="../docs.jsonl"))),
    Fault("eval-manifest-not-json", ["eval", str(ARTIFACT)], "manifest.json", setup=manifest_text("{not json")),
    # data inspect: what it used to miss
    Fault("inspect-sidecar-short", ["data", "inspect", "data"], "fineweb_val_bytes_000000.bin", setup=sidecar("short")),
    Fault("inspect-sidecar-all-zero", ["data", "inspect", "data"], "fineweb_val_bytes_000000.bin",
          setup=sidecar("zero")),
    Fault("inspect-train-shard-gap", ["data", "inspect", "data"], "fineweb_train_000001.bin", setup=train_shard_gap),
    Fault("inspect-unlisted-shard", ["data", "inspect", "data"], "fineweb_train_000099.bin",
          setup=lambda root: _shard(root / DATA / "fineweb_train_000099.bin", [1, 2])),
    # data prepare
    Fault("prepare-lone-surrogate", ["data", "prepare", "bad.jsonl", "--tokenizer", "tok.model", "--out", "out",
                                     "--val-docs", "1", *QUIET], "bad.jsonl:1", setup=write("bad.jsonl", SURROGATE)),
    Fault("prepare-max-docs-negative", ["data", "prepare", "docs.jsonl", "--tokenizer", "tok.model", "--out", "out",
                                        "--max-docs", "-1", *QUIET], "--max-docs"),
    Fault("prepare-empty-input", ["data", "prepare", "empty.txt", "--tokenizer", "tok.model", "--out", "out",
                                  "--val-docs", "1", *QUIET], "empty.txt", setup=write("empty.txt", "")),
    Fault("prepare-no-train-docs", ["data", "prepare", "docs.jsonl", "--tokenizer", "tok.model", "--out", "out",
                                    "--val-docs", "400", *QUIET], "train split"),
    Fault("prepare-too-few-docs", ["data", "prepare", "docs.jsonl", "--tokenizer", "tok.model", "--out", "out",
                                   "--val-docs", "500", *QUIET], "--val-docs 500"),
    Fault("prepare-out-is-file", ["data", "prepare", "docs.jsonl", "--tokenizer", "tok.model", "--out", "tok.vocab",
                                  *QUIET], "tok.vocab"),
    Fault("prepare-out-under-file", ["data", "prepare", "docs.jsonl", "--tokenizer", "tok.model", "--out",
                                     "tok.vocab/data", *QUIET], "tok.vocab"),
    Fault("prepare-out-read-only", ["data", "prepare", "docs.jsonl", "--tokenizer", "tok.model", "--out", "ro/data",
                                    *QUIET], "ro", setup=read_only_dir("ro")),
    # data tokenizer
    Fault("tokenizer-out-is-dir", ["data", "tokenizer", "docs.jsonl", "--out", "d.model", "--vocab-size", "300"],
          "d.model", setup=make_dir("d.model")),
    Fault("tokenizer-out-under-file", ["data", "tokenizer", "docs.jsonl", "--out", "tok.vocab/t.model",
                                       "--vocab-size", "300"], "tok.vocab"),
    Fault("tokenizer-out-read-only", ["data", "tokenizer", "docs.jsonl", "--out", "ro/t.model", "--vocab-size", "300"],
          "ro", setup=read_only_dir("ro")),
    Fault("tokenizer-empty-input", ["data", "tokenizer", "empty.txt", "--out", "t.model", "--vocab-size", "300"],
          "empty.txt", setup=write("empty.txt", "")),
    Fault("tokenizer-lone-surrogate", ["data", "tokenizer", "bad.jsonl", "--out", "t.model", "--vocab-size", "300"],
          "bad.jsonl:1", setup=write("bad.jsonl", SURROGATE)),
    Fault("tokenizer-max-docs-negative", ["data", "tokenizer", "docs.jsonl", "--out", "t.model", "--vocab-size", "300",
                                          "--max-docs", "-1"], "--max-docs"),
    Fault("tokenizer-vocab-size-zero", ["data", "tokenizer", "docs.jsonl", "--out", "t.model", "--vocab-size", "0"],
          "--vocab-size"),
    # data download, offline
    Fault("download-offline", ["data", "download", "--variant", "sp1024", "--out", "dl"], "Hugging Face Hub",
          env={"HF_HUB_OFFLINE": "1"}),
]
