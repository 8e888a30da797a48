"""SentencePiece tokenizers as a run loads them, and the text transform they expect.

A tokenizer whose user-defined symbols include the four CaseOps operators expects
CaseOps-transformed text; `Tokenizer.transform` says so, and everything downstream
(preparation, byte accounting) keys off it rather than off file names. Encoding text and
training a tokenizer are the data tools' (pgolf.data.encode, pgolf.data.tokenizer_training).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from pgolf.data import caseops
from pgolf.errors import PgolfError

IDENTITY = "identity"
TRANSFORMS = (IDENTITY, caseops.NAME)


@dataclass
class Tokenizer:
    """A loaded SentencePiece model plus what pgolf needs to know about it."""

    path: Path
    sp: spm.SentencePieceProcessor

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def transform(self) -> str:
        """The text transform the model was trained on: CaseOps iff it reserves its operators."""
        unk = self.sp.unk_id()
        if all(self.sp.piece_to_id(op) != unk for op in caseops.OPERATORS):
            return caseops.NAME
        return IDENTITY


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise PgolfError(f"tokenizer {path} does not exist")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as e:
        raise PgolfError(f"tokenizer {path}: not a SentencePiece model ({e})") from None
    if sp.vocab_size() > 65536:
        raise PgolfError(f"tokenizer {path}: vocab_size {sp.vocab_size()} does not fit the uint16 shards")
    if sp.bos_id() < 0:
        raise PgolfError(f"tokenizer {path}: has no BOS piece; shards need one to mark documents")
    return Tokenizer(path=path, sp=sp)
