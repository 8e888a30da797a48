"""Shared fixtures: real text, real and self-trained tokenizers.

`../shared` (tokenizers and corpora of the real challenge) is used when present; the
self-trained tokenizers use the embedded BBC corpus so the suite runs without it.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest

# One intra-op thread per process, set before torch loads (subprocesses inherit it): the suite's
# models are tiny, so threads buy nothing, and on a 2-core machine the two-rank tests' processes
# each spinning up a pool oversubscribe it (on this machine, under load: the compiled-training test
# took 244 s with the default pool and 17 s with one thread).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
# Triton kernels under TRITON_INTERPRET=1 run in their own process (test_interpreter_tier.py):
# the variable must be set before any kernel module is imported.
collect_ignore = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["interp"]
SHARED = Path(os.environ.get("PGOLF_SHARED", REPO.parent / "shared"))
TOKENIZERS = SHARED / "data" / "tokenizers"
CORPORA = SHARED / "data" / "corpora"
CASEOPS_MODEL = TOKENIZERS / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"


def shared_tokenizer_paths() -> list[Path]:
    return sorted(TOKENIZERS.rglob("*.model")) if TOKENIZERS.is_dir() else []


def read_jsonl_gz(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in itertools.islice(f, n)]


@pytest.fixture(scope="session")
def fineweb_docs() -> list[str]:
    path = CORPORA / "fineweb_legal_pilot_2800.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared)")
    return read_jsonl_gz(path, 300)


@pytest.fixture(scope="session")
def bbc_docs() -> list[str]:
    from pgolf.data.embedded import bbc_news_documents

    return bbc_news_documents()


@pytest.fixture(scope="session")
def own_tokenizer(tmp_path_factory, bbc_docs):
    """A 1024-piece tokenizer trained by the suite on 1,500 BBC articles (the rest are held out)."""
    from pgolf.data.tokenizer_training import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "bbc_1024.model"
    return train_tokenizer(bbc_docs[:1500], path, vocab_size=1024)


@pytest.fixture(scope="session")
def own_caseops_tokenizer(tmp_path_factory, bbc_docs):
    from pgolf.data.tokenizer_training import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "bbc_caseops_1024.model"
    return train_tokenizer(bbc_docs[:1500], path, vocab_size=1024, transform="caseops_v1")


@pytest.fixture(scope="session")
def heldout_docs(bbc_docs) -> list[str]:
    return bbc_docs[1500:1800]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, own_tokenizer, bbc_docs):
    """A small BOS-prefixed dataset of real text: 40 val articles, 360 train articles."""
    from pgolf.data.prepare import PrepareOptions, prepare

    src = tmp_path_factory.mktemp("tiny") / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in bbc_docs[:400]))
    out = src.parent / "data"
    prepare(PrepareOptions(inputs=[src], tokenizer=own_tokenizer.path, out_dir=out, val_docs=40,
                           shard_tokens=60_000, workers=1, progress=False))
    return out, own_tokenizer.path


TINY = [  # a model that takes milliseconds per step on a CPU
    "model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
    "train.seq_len=64", "train.batch_tokens=1024", "train.grad_accum_steps=1", "train.iterations=8",
    "train.warmup_steps=0", "train.warmdown_iters=3", "train.warmdown=step", "train.max_wallclock_seconds=0",
    "train.val_every=0", "train.log_every=1", "eval.batch_tokens=4096", "run.progress=false",
]


def tiny_config(tiny_data, out_dir, *overrides):
    """The smoke preset shrunk further, on `tiny_data`, ignoring the host's environment."""
    from pgolf.config import load_config

    data, tok = tiny_data
    return load_config("smoke", [*TINY, f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={out_dir}",
                                 "run.name=t", *overrides], env={})


def train_losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if r["event"] == "train"]
