"""Training a SentencePiece tokenizer with the challenge's settings (`pgolf data tokenizer`, the demo,
the tests' fixtures): a data tool, never part of a run.
"""
from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import sentencepiece as spm

from pgolf.data import caseops
from pgolf.data.encode import apply_transform
from pgolf.data.outputs import created_dir
from pgolf.data.tokenizer import IDENTITY, TRANSFORMS, Tokenizer, load_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import check_output_file

# The challenge's tokenizer settings (spec §2.6, §5.1; data/download_hf_docs_and_tokenize.py).
CHALLENGE_TRAINER_SETTINGS = dict(
    model_type="bpe",
    character_coverage=0.999,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=0,
    bos_id=1,
    eos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
)



def _training_sentences(docs: Iterable[str], transform: str, max_docs: int | None) -> Iterator[str]:
    # As the official exporter does for training only: NUL -> space, strip, drop empties.
    for i, text in enumerate(docs):
        if max_docs is not None and i >= max_docs:
            return
        text = apply_transform(transform, text).replace("\x00", " ").strip()
        if text:
            yield text


def _nonempty(sentences: Iterator[str], source: str) -> Iterator[str]:
    """`sentences`, or a clear error if there are none (SentencePiece's own message names no file)."""
    first = next(sentences, None)
    if first is None:
        raise PgolfError(f"{source} hold no text to train a tokenizer on (every document is empty)")
    yield first
    yield from sentences


def train_tokenizer(
    docs: Iterable[str],
    model_path: str | os.PathLike,
    vocab_size: int,
    *,
    transform: str = IDENTITY,
    user_symbols: Iterable[str] = (),
    max_docs: int | None = None,
    num_threads: int | None = None,
    source: str = "the inputs",
) -> Tokenizer:
    """Train a BPE SentencePiece model with the challenge's settings and write it atomically.

    With transform="caseops_v1" the documents are transformed first and the four
    operators are reserved as user symbols (ids 4..7), as the CaseOps record's model is.
    """
    if transform not in TRANSFORMS:
        raise PgolfError(f"--transform must be one of {TRANSFORMS}, got {transform!r}")
    symbols = list(caseops.OPERATORS) if transform == caseops.NAME else []
    symbols += [s for s in user_symbols if s not in symbols]
    model_path = Path(model_path)
    if model_path.suffix != ".model":
        raise PgolfError(f"tokenizer output {model_path} must end in .model")
    if max_docs is not None and max_docs < 1:
        raise PgolfError(f"--max-docs must be at least 1, got {max_docs}")
    if vocab_size < 8:
        raise PgolfError(f"--vocab-size must be at least 8 (4 special pieces and some text), got {vocab_size}")
    for suffix in (".model", ".vocab"):
        check_output_file(model_path.with_suffix(suffix), "--out")
    sentences = _nonempty(_training_sentences(docs, transform, max_docs), source)
    sentences = itertools.chain([next(sentences)], sentences)  # an empty input fails here, before any file exists
    with created_dir(model_path.parent, "--out"), \
            tempfile.TemporaryDirectory(dir=model_path.parent, prefix=".tok-") as tmp:
        prefix = Path(tmp) / "tok"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences,
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                user_defined_symbols=symbols,
                num_threads=num_threads or os.cpu_count() or 1,
                minloglevel=2,
                **CHALLENGE_TRAINER_SETTINGS,
            )
        except RuntimeError as e:
            raise PgolfError(f"SentencePiece training failed: {e}") from None
        trained = spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model"))).vocab_size()
        if trained != vocab_size:  # hard_vocab_limit=False lets a small corpus yield fewer pieces
            raise PgolfError(f"the corpus only supports {trained} pieces, fewer than --vocab-size {vocab_size}")
        try:
            for suffix in (".vocab", ".model"):  # the .model last: its presence means both are complete
                os.replace(prefix.with_suffix(suffix), model_path.with_suffix(suffix))
        except OSError as e:
            raise PgolfError(f"--out {model_path}: cannot write it ({e.strerror})") from None
    return load_tokenizer(model_path)
