"""Documents of the val stream, the TTT batch queue, and #2014's short-document chunk schedule.

A document is a span (s, e): s a BOS position, e the next BOS position (N − 1 for the last
document); its inputs are tokens[s:e] and its targets the positions s+1..e. The documents
therefore partition the targets 1..N−1 exactly, as every pgolf eval mode scores them (C4).

Departure from the records: each document boundary's BOS (positions e < N − 1) is scored here,
as the last target of the document before it; the records never score a BOS target. That adds
(documents − 1) targets (49,999 of the ~47.85M on the challenge's 50,000-document val set, 0.1%)
worth 0 bytes each, so their CE raises the loss sum while the byte count is unchanged. Every
pgolf mode scores them (the windows mode too), so pgolf's numbers compare with each other; the
engine reports their count and loss (`TTTReport.bos_targets`, `bos_loss_sum`), so the
records-comparable figure (loss without them over the same bytes) is exact, not estimated.

The queue (§5.14): documents sorted by length (longest first, ties by position), cut into
batches of `batch_docs`, taken longest batch first. `queue_order` is the order documents are
scored in, the one state built from scored documents (the n-gram tilt) must follow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pgolf.config import TTTConfig
from pgolf.errors import PgolfError
from pgolf.data.shards import doc_starts_at_bos
from pgolf.metric.ledger import ScoreLedger, position_runs


@dataclass(frozen=True)
class Doc:
    start: int  # s: the document's BOS position
    end: int  # e: its last target (the next BOS, or N − 1)

    @property
    def targets(self) -> int:
        return self.end - self.start

    @property
    def length(self) -> int:
        """Tokens from its BOS to the next one, both included (#2014's `dl`)."""
        return self.end - self.start + 1


def split_documents(tokens: torch.Tensor, bos_id: int) -> list[Doc]:
    """The stream's documents (see the module docstring); tokens[0] must be BOS."""
    n = tokens.numel()
    if n < 2 or int(tokens[0]) != bos_id:
        raise PgolfError(f"the TTT eval needs a val stream of >= 2 tokens starting with BOS (id {bos_id})")
    # the same split as the n-gram tilt's documents (pgolf.eval.ngram_tilt.document_starts): a BOS at N-1 starts none
    starts = doc_starts_at_bos(tokens[: n - 1].cpu().numpy(), bos_id).tolist()
    ends = starts[1:] + [n - 1]
    return [Doc(s, e) for s, e in zip(starts, ends)]


def batch_queue(docs: list[Doc], batch_docs: int) -> list[list[Doc]]:
    """Length-sorted batches, longest first (the last batch holds the shortest documents)."""
    order = sorted(docs, key=lambda d: (-d.length, d.start))
    return [order[i:i + batch_docs] for i in range(0, len(order), batch_docs)]


def queue_order(val, ttt: TTTConfig) -> list[tuple[int, int]]:
    """Every document (s, e) in the order the TTT engine's queue scores them."""
    return [(d.start, d.end) for batch in batch_queue(split_documents(val.tokens, val.bos_id), ttt.batch_docs)
            for d in batch]


def queue_document_indices(val, ttt: TTTConfig) -> np.ndarray:
    """Each document's index in stream order (as the n-gram tilt numbers them: the same split), in the
    order the queue scores them: the order the tilt's state is built in (frontier-spec F1.7)."""
    docs = split_documents(val.tokens, val.bos_id)
    index = {d: i for i, d in enumerate(docs)}
    return np.array([index[d] for batch in batch_queue(docs, ttt.batch_docs) for d in batch], dtype=np.int64)


def parse_short_doc_chunks(spec: str) -> list[tuple[int, int]]:
    """'256:8,2000:24' -> [(256, 8), (2000, 24)] (sorted by length); '' -> []."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            limit, chunk = (int(v) for v in part.split(":"))
        except ValueError:
            limit = chunk = 0
        if limit < 1 or chunk < 1:
            raise PgolfError(f"eval.ttt.short_doc_chunks (TTT_SHORT_DOC_CHUNKS): {part!r} is not 'max_len:chunk' "
                             f"with two positive integers (e.g. '256:8,2000:24')")
        out.append((limit, chunk))
    return sorted(out)


def chunk_size_for(batch: list[Doc], ttt: TTTConfig, schedule: list[tuple[int, int]] | None = None) -> int:
    """#2014 (frontier-spec F4): the chunk of the first rule whose max_len >= the batch's longest
    document (BOS ends included); else eval.ttt.chunk_size. Lengths are known before any scoring."""
    longest = max(d.length for d in batch)
    rules = parse_short_doc_chunks(ttt.short_doc_chunks) if schedule is None else schedule
    return next((chunk for limit, chunk in rules if longest <= limit), ttt.chunk_size)


def phase_boundaries(n_docs: int, ttt: TTTConfig) -> list[int]:
    """Documents (in queue order) each global SGD phase trains on: ⌊prefix·k/phases⌋, k = 1..phases
    (#1855: [833, 1666, 2500]); the prefix is capped at the documents there are."""
    prefix = min(ttt.prefix_docs, n_docs)
    bounds = [prefix * k // ttt.phases for k in range(1, ttt.phases + 1)] if ttt.phases else []
    return [b for b in bounds if b > 0]


class PublicBOS:
    """The ledger as the TTT engine and its global SGD write it: reads of document-start BOS
    positions are dropped from updates; scoring passes through. Those positions are public before
    any update, like position 0: the split at BOS, the length sort and the chunk schedule read them
    all before anything is scored. Every other position an update reads must be scored first."""

    def __init__(self, ledger: ScoreLedger, docs: list[Doc]):
        self.ledger = ledger
        self.public = np.array(sorted(d.start for d in docs), dtype=np.int64)

    def scored(self, positions) -> None:
        self.ledger.scored(positions)

    def update(self, positions) -> None:
        p = _numpy(positions)
        self.ledger.update(p[~np.isin(p, self.public)])

    def update_ranges(self, starts, ends) -> None:
        a, b = _numpy(starts), _numpy(ends)
        inside = np.searchsorted(self.public, b, "right") - np.searchsorted(self.public, a, "left")
        simple = (inside == 0) | ((inside == 1) & np.isin(a, self.public))  # at most a public first position
        a = np.where(simple & (inside == 1), a + 1, a)
        keep = simple & (a <= b)
        parts = [np.arange(x, y + 1) for x, y in zip(a[~simple].tolist(), b[~simple].tolist())]
        other = position_runs(np.setdiff1d(np.concatenate(parts), self.public)) if parts else np.zeros((0, 2), np.int64)
        self.ledger.update_ranges(np.concatenate([a[keep], other[:, 0]]), np.concatenate([b[keep], other[:, 1]]))

    def __getattr__(self, name: str):  # everything else is the ledger's (read_ranges, save, ...)
        if name == "ledger":
            raise AttributeError(name)
        return getattr(self.ledger, name)


def _numpy(positions) -> np.ndarray:
    if hasattr(positions, "detach"):
        positions = positions.detach().cpu().numpy()
    return np.asarray(positions, dtype=np.int64).reshape(-1)
