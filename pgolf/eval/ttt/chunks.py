"""A batch's chunk windows: what one score-then-update step of the TTT engine reads and scores.

Chunk ci of a document (s, e) holds its targets s+1+ci·c .. min(s+(ci+1)·c, e); its window is
the last <= `context` input tokens of the document ending just before the chunk's last target,
right-padded to the batch's widest window (the model is causal: padding changes nothing before
it). Documents already done get a one-token dummy row, never scored or trained.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pgolf.eval.ttt.documents import Doc


@dataclass
class Window:
    """One chunk step of a batch, every tensor [b, ...] with b the batch's documents."""
    x: Tensor  # [b, T] inputs (0 past each row's width)
    y: Tensor  # [b, T] targets
    cols: Tensor  # [b, c] columns of the chunk's targets in the window
    positions: Tensor  # [b, c] their stream positions
    scored: Tensor  # [b, c] bool: real chunk targets of documents still in progress
    train_rows: Tensor  # [b] bool: documents whose chunk is not their last
    start: Tensor  # [b] the window's first input position
    last: Tensor  # [b] the chunk's last target


def chunk_window(tokens: Tensor, batch: list[Doc], ci: int, chunk: int, context: int) -> Window | None:
    """The window of chunk `ci` for every document of `batch` (None: all are done)."""
    dev = tokens.device
    s = torch.tensor([d.start for d in batch], device=dev)
    e = torch.tensor([d.end for d in batch], device=dev)
    n_chunks = (e - s + chunk - 1) // chunk
    active = ci < n_chunks
    if not bool(active.any()):
        return None
    first = torch.where(active, s + 1 + ci * chunk, e)  # done documents: a 1-token dummy window
    last = torch.where(active, torch.minimum(s + (ci + 1) * chunk, e), e)
    start = torch.where(active, torch.maximum(s, last - context), e - 1)  # inputs start..last-1
    width = last - start
    t = int(width.max())
    col = torch.arange(t, device=dev)
    valid = col < width[:, None]
    pos = torch.where(valid, start[:, None] + col, start[:, None])  # input positions (padding: a valid index)
    x = torch.where(valid, tokens[pos], 0).long()
    y = tokens[pos + 1].long()
    cols = (width[:, None] - chunk + torch.arange(chunk, device=dev)).clamp(min=0)
    n_scored = last - first + 1
    scored = (torch.arange(chunk, device=dev) >= chunk - n_scored[:, None]) & active[:, None]
    return Window(x, y, cols, (pos + 1).gather(1, cols), scored, active & (ci < n_chunks - 1), start, last)
