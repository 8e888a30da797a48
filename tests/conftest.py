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

REPO = Path(__file__).resolve().parents[1]
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
    from pgolf.data.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "bbc_1024.model"
    return train_tokenizer(bbc_docs[:1500], path, vocab_size=1024)


@pytest.fixture(scope="session")
def own_caseops_tokenizer(tmp_path_factory, bbc_docs):
    from pgolf.data.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "bbc_caseops_1024.model"
    return train_tokenizer(bbc_docs[:1500], path, vocab_size=1024, transform="caseops_v1")


@pytest.fixture(scope="session")
def heldout_docs(bbc_docs) -> list[str]:
    return bbc_docs[1500:1800]
