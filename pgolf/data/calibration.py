"""Shuffled train windows for GPTQ calibration (spec §2.4, the records' `ShuffledSequenceLoader`).

- rank r of world W owns the train shards `files[r::W]`, so ranks never share a window
- per shard, a random phase in [0, seq_len − 1] (capped so one window still fits) and a
  random order of the window starts `phase + k·seq_len`, each window seq_len + 1 tokens
  (inputs and their shifted targets)
- each sequence comes from a shard drawn with probability proportional to the windows it
  has left; when every shard is used up, all are reshuffled (new phases and orders)
- one generator, `PCG64(rank)` as in the records (or PCG64([seed, rank]) with `seed`), draws
  everything in that order, so the same rank and seed give the same batches

The records take `local_tokens // seq_len` sequences per batch (48 × 2048, or 32 × 3072 with
the progressive schedule). Every header is checked at construction; each window's ids are
checked against the vocabulary as it is read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pgolf.data import shards
from pgolf.data.shards import ShardError
from pgolf.errors import PgolfError


class ShuffledSequenceLoader:
    def __init__(self, files: Sequence[str | Path], *, rank: int, world: int, seq_len: int, vocab_size: int,
                 seed: int | None = None):
        if not 0 <= rank < world:
            raise PgolfError(f"rank {rank} is outside world size {world}")
        if seq_len <= 0:
            raise PgolfError(f"calibration seq_len must be positive, got {seq_len}")
        self.files = [Path(f) for f in files][rank::world]
        if not self.files:
            raise PgolfError(f"rank {rank} of {world} owns no train shard ({len(files)} shards): "
                             "calibration needs at least one shard per rank")
        self.n_tokens = [shards.read_header(f) for f in self.files]
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self.rng = np.random.Generator(np.random.PCG64(rank if seed is None else [seed, rank]))
        self._tokens: dict[int, np.ndarray] = {}
        self._starts: list[list[int]] = [[] for _ in self.files]
        self._reset_all()
        if not any(self._starts):
            raise PgolfError(f"rank {rank}'s shards ({', '.join(p.name for p in self.files)}) hold no full "
                             f"window of {seq_len} + 1 tokens")

    @classmethod
    def from_dir(cls, data_dir: str | Path, **kw) -> "ShuffledSequenceLoader":
        files = shards.require_token_shards(data_dir, "train")
        return cls(files, **kw)

    def _reset(self, si: int) -> None:
        n = self.n_tokens[si]
        max_phase = min(self.seq_len - 1, max(0, n - self.seq_len - 1))
        phase = int(self.rng.integers(max_phase + 1)) if max_phase > 0 else 0
        count = max((n - 1 - phase) // self.seq_len, 0)
        self._starts[si] = (phase + self.rng.permutation(count) * self.seq_len).tolist()

    def _reset_all(self) -> None:
        for si in range(len(self.files)):
            self._reset(si)

    def take_windows(self, count: int) -> list[tuple[int, int]]:
        """The next `count` windows as (index into `self.files`, start token), advancing the draw."""
        remaining = np.array([len(s) for s in self._starts], dtype=np.float64)
        out = []
        for _ in range(count):
            if remaining.sum() <= 0:
                self._reset_all()
                remaining = np.array([len(s) for s in self._starts], dtype=np.float64)
            si = int(self.rng.choice(len(self.files), p=remaining / remaining.sum()))
            out.append((si, self._starts[si].pop()))
            remaining[si] -= 1
        return out

    def _window(self, si: int, start: int) -> np.ndarray:
        tokens = self._tokens.get(si)
        if tokens is None:
            tokens = self._tokens[si] = shards.read_shard(self.files[si])
        window = np.asarray(tokens[start:start + self.seq_len + 1], dtype=np.int64)
        if window.size and int(window.max()) >= self.vocab_size:
            raise ShardError(self.files[si], f"token id {int(window.max())} out of range for vocab_size "
                                             f"{self.vocab_size} (in tokens {start}..{start + self.seq_len + 1})")
        return window

    def next_batch(self, sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each [sequences, seq_len] int64 on the CPU."""
        rows = np.stack([self._window(si, start) for si, start in self.take_windows(sequences)])
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]
