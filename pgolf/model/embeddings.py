"""Additions to the token embedding: hashed n-gram embeddings and the SmearGates (spec §5.6, §5.13, §6.1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.model.roles import CONTROL, FLOAT_GATE, Role, declare, matrix
from pgolf.model.segments import DocSegments, shift_within

# the GDN record's hash multipliers (spec §6.1)
_CUR, _PREV, _PREV2 = 36313, 27191, 51497


def ngram_buckets(input_ids: Tensor, buckets: int, order: int, segments: DocSegments | None = None) -> Tensor:
    """Hash of (t_{i−order+1}, ..., t_i) into buckets − 1 rows; positions without a full
    n-gram (row start, or across a BOS with segments) get the last bucket."""
    ids = input_ids.long()
    h = _CUR * ids
    full = torch.ones_like(ids, dtype=torch.bool)
    for lag, mult in ((1, _PREV), (2, _PREV2))[: order - 1]:
        h = h ^ (mult * shift_within(ids, lag, None))
        full[:, :lag] = False
        if segments is not None:
            full &= segments.same_doc(lag)
    return torch.where(full, h % (buckets - 1), buckets - 1)


class BigramHash(nn.Module):
    """table[bigram(i)] (+ table[trigram(i)]) -> proj to model_dim (zero-init) -> × scale (init 0.05)."""

    def __init__(self, buckets: int, dim: int, model_dim: int, trigram: bool):
        super().__init__()
        self.buckets, self.trigram = buckets, trigram
        self.table = nn.Embedding(buckets, dim)
        nn.init.normal_(self.table.weight, std=0.02)
        # Adam at the embedding lr, and int6 rows at matrix_bits as the GDN record stores it (spec §6.2)
        declare(self.table, weight=Role("ngram_table", group="ngram"))
        self.proj = CastedLinear(dim, model_dim, zero_init=True, role=matrix("bigram.proj", clip="other"))
        self.scale = nn.Parameter(torch.tensor(0.05, dtype=torch.float32))
        declare(self, scale=CONTROL)

    def forward(self, input_ids: Tensor, segments: DocSegments | None = None) -> Tensor:
        e = self.table(ngram_buckets(input_ids, self.buckets, 2, segments))
        if self.trigram:
            e = e + self.table(ngram_buckets(input_ids, self.buckets, 3, segments))
        return self.proj(e) * self.scale.to(e.dtype)


class SmearGate(nn.Module):
    """x_t <- (1 − σ(g))·x_t + σ(g)·x_{t−1}, σ(g) per dimension, g init 0 (the GDN record's static form).
    x_{t−1} is zero at a row start and, with segments, at a BOS (so no document reaches into the next).
    It smears the normed embedding (`before_norm` False)."""

    before_norm = False

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32))
        declare(self, gate=CONTROL)  # a per-dimension mix, not a gate matrix

    def forward(self, x: Tensor, segments: DocSegments | None = None) -> Tensor:
        s = torch.sigmoid(self.gate).to(x.dtype)
        return (1 - s) * x + s * shift_within(x, 1, segments)


class InputGatedSmearGate(nn.Module):
    """The 1.0611 record's SmearGate (spec §5.6), on the raw embedding (`before_norm`):
    e_t <- e_t + λ·σ(w·e_t[:window])·e_{t−1}·[id_t ≠ BOS], w (a window -> 1 gate row) and λ zero-init,
    so it starts as the identity. The BOS mask is always on (with or without segments): the last
    token of one document never reaches the next one's BOS. With segments, e_{t−1} is also zero
    at any other document start (a row start is one too)."""

    before_norm = True

    def __init__(self, dim: int, bos_id: int, window: int = 12):
        super().__init__()
        self.bos_id, self.window = bos_id, min(window, dim)
        self.gate = CastedLinear(self.window, 1, zero_init=True, role=FLOAT_GATE)  # fp16 in the artifact, as the records
        self.lam = nn.Parameter(torch.zeros(1, dtype=torch.float32))
        declare(self, lam=CONTROL)

    def forward(self, x: Tensor, segments: DocSegments | None, input_ids: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(x[..., : self.window]))  # [B, T, 1]
        keep = (input_ids != self.bos_id).unsqueeze(-1).to(x.dtype)
        return x + self.lam.to(x.dtype) * g * shift_within(x, 1, segments) * keep
