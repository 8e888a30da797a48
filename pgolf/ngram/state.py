"""Hints of the token-only online n-gram state (frontier-spec F1), for every position of a token stream.

The state is built in *scoring order*: the caller names the documents (their start positions) and
the order in which the eval scores them, and the state walks the documents in that order, so a
position's hint depends only on the documents scored before its own and on its own document's
earlier tokens (C1 in the order the score is produced; F1.7's mismatch cannot arise). The window
is not reset between documents: the last tokens of the previously scored document are context,
as BOS is an ordinary token (as in #2135, whose order is the file order).

The order is the engine's processing order, one document after another. Documents scored side by
side in one TTT batch may be listed in any order among themselves (each one's prediction uses only
its own prefix and adapter, so listing A before B lets B's hints use all of A without A depending
on B); a global update must follow every document it trained on and precede every one it affects.

`hints.token[t]` is the hint for the token at stream position t (the target the eval scores there),
-1 where none fires; `hints.confidence[t]` the context's top share. Three implementations give
equal arrays: the C++ pass (native), the offline numpy sort (fallback) and a literal Python one
(pgolf.ngram.reference, for tests).

Against #2130's helper (the same read / count / top-on-strictly-greater rule): its hint i is for
v[i+1], ours at t is for v[t]; its ring is pre-seeded with the first token (F1.1 item 6), ours
gives no hint until order-1 tokens are seen; the key functions are our own (pgolf.ngram.keys).
Not compared against its code (not run here).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from pgolf.data.shards import doc_starts_at_bos  # noqa: F401  (pgolf.ngram's API; one BOS split for all)
from pgolf.errors import PgolfError
from pgolf.ngram import native
from pgolf.ngram.fallback import numpy_hints
from pgolf.ngram.settings import NgramSettings

BACKENDS = ("auto", "native", "numpy")


@dataclass(frozen=True, eq=False)  # arrays: compare their fields, not the records
class Hints:
    token: np.ndarray  # int32 [N]: gated hint for the token at each stream position, -1 where none
    confidence: np.ndarray  # float32 [N]: top count / total of the position's context, 0 where unseen
    settings: NgramSettings
    backend: str  # "native" or "numpy": the implementation that built them
    source: str = "built"  # "built" here, or "loaded" from rank 0's file (pgolf.ngram.share)

    @property
    def fired(self) -> int:
        return int(np.count_nonzero(self.token >= 0))


def native_available() -> bool:
    return native.load() is not None


def checked_tokens(tokens, vocab_size: int) -> np.ndarray:
    """`tokens` as a contiguous int32 array after dtype and range checks (PgolfError naming the fault)."""
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or not 0 < vocab_size < 2**31:
        raise PgolfError(f"vocab_size must be an integer in [1, 2^31), got {vocab_size!r}")
    if not isinstance(tokens, np.ndarray):
        raise PgolfError(f"tokens must be a numpy array of integer token ids, got {type(tokens).__name__}")
    if tokens.ndim != 1:
        raise PgolfError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.dtype.kind not in "iu":
        raise PgolfError(f"tokens must have an integer dtype (uint16, int32, int64, ...), got {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = int(np.flatnonzero((tokens < 0) | (tokens >= vocab_size))[0])
        raise PgolfError(f"tokens: position {bad} holds {int(tokens[bad])}, outside [0, {vocab_size})")
    return np.ascontiguousarray(tokens, dtype=np.int32)


def scoring_spans(n_tokens: int, doc_starts=None, order=None) -> np.ndarray:
    """(start, length) int64 rows, one per document, in scoring order; each position exactly once."""
    starts = np.zeros(1 if n_tokens else 0, dtype=np.int64) if doc_starts is None else np.asarray(doc_starts)
    if starts.ndim != 1 or (starts.size and starts.dtype.kind not in "iu"):
        raise PgolfError(f"doc_starts must be a 1-D integer array, got {starts.dtype} of shape {starts.shape}")
    starts = starts.astype(np.int64)
    if n_tokens and (starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n_tokens):
        raise PgolfError(f"doc_starts must start at 0, increase strictly and stay below {n_tokens} (the stream length)")
    lens = np.diff(np.append(starts, n_tokens))
    idx = np.arange(len(starts)) if order is None else np.asarray(order)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu") or len(idx) != len(starts) \
            or not np.array_equal(np.sort(idx), np.arange(len(starts))):
        raise PgolfError(f"order must be a permutation of the {len(starts)} document indices (each scored exactly once)")
    idx = idx.astype(np.int64)
    return np.stack([starts[idx], lens[idx]], axis=1)


def span_positions(spans: np.ndarray) -> np.ndarray:
    """Stream positions in scoring order (int64)."""
    total = int(spans[:, 1].sum())
    first = np.cumsum(spans[:, 1]) - spans[:, 1]
    return np.repeat(spans[:, 0] - first, spans[:, 1]) + np.arange(total, dtype=np.int64)


def build_hints(tokens: np.ndarray, vocab_size: int, *, doc_starts=None, order=None,
                settings: NgramSettings = NgramSettings(), backend: str = "auto") -> Hints:
    """Hints for every position of `tokens`, the state walked over documents in `order`.

    doc_starts: start position of each document (default: one document, the whole stream);
    order: the document indices in the order the eval scores them (default: file order);
    backend: "native" (C++, an error if not built), "numpy" (the fallback) or "auto".
    """
    if backend not in BACKENDS:
        raise PgolfError(f"ngram backend must be one of {BACKENDS}, got {backend!r}")
    toks = checked_tokens(tokens, vocab_size)
    spans = scoring_spans(len(toks), doc_starts, order)
    lib = native.load() if backend != "numpy" else None
    if backend == "native" and lib is None:
        raise PgolfError("ngram backend 'native' asked for, but pgolf/ngram/_ngram_state is not built "
                         "(run `python setup.py build_ext --inplace`)")
    if lib is not None:
        hint, conf = native.native_hints(lib, toks, spans, vocab_size, settings)
        return Hints(hint, conf, settings, "native")
    if backend == "auto":
        warnings.warn("pgolf.ngram: the C++ state build is not built; using the numpy fallback (slower, equal hints)",
                      RuntimeWarning, stacklevel=2)
    hint, conf = numpy_hints(toks, span_positions(spans), vocab_size, settings)
    return Hints(hint, conf, settings, "numpy")
