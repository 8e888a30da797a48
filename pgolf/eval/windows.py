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

    def __len__(self) -> int:
        return self.starts.numel()

    def shard(self, rank: int, world: int) -> "Windows":
        """A contiguous share of the windows for one rank."""
        n = len(self)
        lo, hi = n * rank // world, n * (rank + 1) // world
        return Windows(self.starts[lo:hi], self.first_scored[lo:hi], self.seq_len)


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
