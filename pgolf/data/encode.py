"""Documents -> the challenge's token stream (and the original-byte sidecar).

Kept free of torch so that `prepare`'s worker processes start fast.
"""
from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import numpy as np

from pgolf.data import caseops, caseops_codec
from pgolf.data.tokenizer import IDENTITY, TRANSFORMS, Tokenizer, load_tokenizer
from pgolf.errors import PgolfError

U16_MAX = np.iinfo(np.uint16).max


def apply_transform(name: str, text: str) -> str:
    if name == IDENTITY:
        return text
    if name == caseops.NAME:
        return caseops_codec.encode_caseops(text)
    raise PgolfError(f"unknown text transform {name!r}; expected one of {TRANSFORMS}")


def encode_with_surfaces(tok: Tokenizer, text: str) -> tuple[list[int], list[str]]:
    """Token ids and the surface slice of `text` each one covers."""
    proto = tok.sp.encode(text, return_type="proto")
    return [p.id for p in proto.pieces], [p.surface for p in proto.pieces]


def document_tokens(tok: Tokenizer, text: str) -> np.ndarray:
    """One document as the challenge stores it: [BOS] + encode(transform(text))."""
    ids = tok.sp.encode(apply_transform(tok.transform, text), out_type=int)
    return np.asarray([tok.bos_id, *ids], dtype=np.int64)


def surface_bytes(tok: Tokenizer, surfaces: list[str]) -> list[int]:
    """Original UTF-8 bytes per token, from the surface slices it covers."""
    if tok.transform == caseops.NAME:
        return caseops_codec.original_byte_counts(surfaces)
    return [len(s.encode("utf-8")) for s in surfaces]


def encode_documents(tok: Tokenizer, texts: list[str], with_sidecar: bool) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Encode documents as [BOS] + ids each, concatenated.

    Returns (tokens, sidecar or None, UTF-8 bytes of the original texts). The sidecar
    gives each token its original bytes (BOS: 0), aligned with `tokens`.
    """
    transformed = [apply_transform(tok.transform, t) for t in texts]
    side_parts = []
    if with_sidecar:
        token_parts = []
        for text in transformed:
            ids, surfaces = encode_with_surfaces(tok, text)
            counts = surface_bytes(tok, surfaces)
            if counts and max(counts) > U16_MAX:
                raise PgolfError(f"a token covers {max(counts)} bytes of text, more than the uint16 sidecar can hold")
            token_parts.append([tok.bos_id, *ids])
            side_parts.append([0, *counts])
    else:
        token_parts = [[tok.bos_id, *ids] for ids in tok.sp.encode(transformed, out_type=int, num_threads=1)]
    tokens = np.fromiter(itertools.chain.from_iterable(token_parts), dtype=np.uint16)
    sidecar = np.fromiter(itertools.chain.from_iterable(side_parts), dtype=np.uint16) if with_sidecar else None
    return tokens, sidecar, sum(len(t.encode("utf-8")) for t in texts)


# Process-pool plumbing: each worker loads the tokenizer once.
_worker_tok: Tokenizer | None = None


def _exit_when_orphaned(parent_pid: int, poll_s: float = 0.5) -> None:
    # A pool worker blocks on its task queue forever if the parent dies without shutting the
    # pool down (SIGKILL, OOM kill): leave as soon as it is no longer the parent's child.
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


def init_worker(tokenizer_path: str, parent_pid: int | None = None) -> None:
    global _worker_tok
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it shuts the pool down
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True, name="orphan-watch").start()
    _worker_tok = load_tokenizer(tokenizer_path)


def encode_task(task: tuple[list[str], bool], tok: Tokenizer | None = None):
    """(texts, with_sidecar) -> (tokens, sidecar, text_bytes, n_docs)."""
    texts, with_sidecar = task
    return (*encode_documents(tok or _worker_tok, texts, with_sidecar), len(texts))
