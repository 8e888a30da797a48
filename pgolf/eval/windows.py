"""Which windows an eval runs, and which of each window's targets it scores (spec §3.5).

The targets 1..N-1 of the val stream are cut into consecutive chunks: the first of
`seq_len` targets, the rest of `stride` (non-overlapping windows: stride = seq_len). A
chunk [a, b] is scored by the window of inputs [b - seq_len, b), i.e. with as much
preceding context as fits: every target is scored exactly once, by a causal model that
sees only its prefix. With stride < seq_len this is the sliding-window eval; each scored
target gets at least seq_len - stride tokens of context. All windows have the same
length (static shapes), and nothing is truncated: the last chunk may be shorter, but
its window is still full length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Windows:
    starts: torch.Tensor  # int64 [W]: input positions [start, start + seq_len)
    first_scored: torch.Tensor  # int64 [W]: targets at positions >= this are scored
    seq_len: int
    # int64 [W]: inputs the window really holds (targets up to start + length); the rest of its
    # seq_len is padding that is run but not scored. None: every window is full.
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.starts.numel()

    def shard(self, rank: int, world: int) -> "Windows":
        """A contiguous share of the windows for one rank."""
        n = len(self)
        lo, hi = n * rank // world, n * (rank + 1) // world
        lengths = None if self.lengths is None else self.lengths[lo:hi]
        return Windows(self.starts[lo:hi], self.first_scored[lo:hi], self.seq_len, lengths)


def plan_windows(n_tokens: int, seq_len: int, stride: int = 0) -> Windows:
    if n_tokens < 2:
        raise ValueError("a stream needs at least 2 tokens to have a target")
    stride = stride or seq_len
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride must be in (0, seq_len={seq_len}], got {stride}")
    last = n_tokens - 1  # the last target position
    seq_len = min(seq_len, last)
    ends = torch.arange(seq_len, last, stride, dtype=torch.int64)  # last target of each chunk
    ends = torch.cat([ends, torch.tensor([last])])
    firsts = torch.cat([torch.tensor([1]), ends[:-1] + 1])
    return Windows(ends - seq_len, firsts, seq_len)


def plan_doc_windows(tokens: torch.Tensor, bos_id: int, seq_len: int, stride: int = 0) -> Windows:
    """Document-isolated windows (eval.doc_isolated): each document scored on its own.

    A document is its BOS and the tokens up to the next BOS; its targets are its own tokens
    after the BOS and the next BOS (the end-of-document prediction), as in the flat stream.
    Each document gets `plan_windows` of its own: one window if it fits in seq_len inputs,
    else chunks scored with as much in-document context as fits (the stride as in the flat
    plan). No window's real inputs cross a BOS; a short document's window is padded to
    seq_len (static shapes) with what follows it in the stream, which a causal model never
    lets reach the scored positions and which is not scored. Windows are in stream order.
    """
    n = tokens.numel()
    if n < 2:
        raise ValueError("a stream needs at least 2 tokens to have a target")
    bos = torch.nonzero(tokens[:-1] == bos_id).flatten().cpu()  # a BOS as the very last token starts no inputs
    doc_starts = bos if bos.numel() and int(bos[0]) == 0 else torch.cat([torch.zeros(1, dtype=torch.int64), bos])
    doc_ends = torch.cat([doc_starts[1:], torch.tensor([n - 1])])  # exclusive end of each document's inputs
    sizes = doc_ends - doc_starts
    short = sizes <= seq_len  # one window each (most documents): no per-document loop
    starts, firsts, lengths = [doc_starts[short]], [doc_starts[short] + 1], [sizes[short]]
    for s, e in zip(doc_starts[~short].tolist(), doc_ends[~short].tolist()):
        local = plan_windows(e - s + 1, seq_len, stride)
        starts.append(local.starts + s)
        firsts.append(local.first_scored + s)
        lengths.append(torch.full_like(local.starts, local.seq_len))
    starts, firsts, lengths = torch.cat(starts), torch.cat(firsts), torch.cat(lengths)
    order = torch.argsort(starts, stable=True)  # stream order
    return Windows(starts[order], firsts[order], min(seq_len, n - 1), lengths[order])
