"""The baseline's training stream (spec §2.4): shards in order, wrapping forever.

Each optimizer micro-step takes world x (local + 1) contiguous tokens; rank r keeps its
own span, and x / y are that span shifted by one. The position in the stream is the
loader's whole state, so checkpoints resume it exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.data import shards
from pgolf.errors import PgolfError


class TokenStream:
    def __init__(self, files: list[Path], vocab_size: int):
        if not files:
            raise PgolfError("no training shards")
        self.files, self.vocab_size = files, vocab_size
        self.file_idx, self.pos = 0, 0
        self.tokens = shards.read_shard(files[0], vocab_size)

    def _open(self, idx: int) -> None:
        self.file_idx = idx % len(self.files)
        self.tokens = shards.read_shard(self.files[self.file_idx], self.vocab_size)
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        parts, remaining = [], n
        while remaining > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                self._open(self.file_idx + 1)
                continue
            k = min(remaining, avail)
            parts.append(np.asarray(self.tokens[self.pos:self.pos + k]))
            self.pos += k
            remaining -= k
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def state_dict(self) -> dict:
        return {"file_idx": self.file_idx, "pos": self.pos, "n_files": len(self.files)}

    def load_state_dict(self, state: dict) -> None:
        if state["n_files"] != len(self.files):
            raise PgolfError(f"checkpoint was written with {state['n_files']} train shards, the data dir has {len(self.files)}")
        self._open(state["file_idx"])
        self.pos = state["pos"]


class DistributedTokenLoader:
    def __init__(self, data_dir: str | Path, rank: int, world: int, vocab_size: int, device: torch.device):
        files = shards.list_token_shards(data_dir, "train")
        if not files:
            raise PgolfError(f"no fineweb_train_NNNNNN.bin shards in {data_dir}")
        self.rank, self.world, self.device = rank, world, device
        self.stream = TokenStream(files, vocab_size)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        local = global_tokens // (self.world * grad_accum)
        span = local + 1
        chunk = self.stream.take(span * self.world)
        mine = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))
        x, y = mine[:-1].view(-1, seq_len), mine[1:].view(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
