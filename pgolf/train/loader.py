"""The baseline's training stream (spec §2.4): shards in order, wrapping forever.

Each optimizer micro-step takes world x (local + 1) contiguous tokens; rank r keeps its
own span, and x / y are that span shifted by one. The position in the stream is the
loader's whole state, so checkpoints resume it exactly. Every shard's header is checked
when the loader is built, so a bad shard fails the run before it starts, not hours in.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from pgolf.data import shards
from pgolf.errors import PgolfError
from pgolf.fileio import sha256_file

MANIFEST_NAME = "manifest.json"  # written by `pgolf data prepare` (pgolf.data.prepare)


class TokenStream:
    def __init__(self, files: list[Path], vocab_size: int):
        if not files:
            raise PgolfError("no training shards")
        self.sizes = [shards.read_header(f) for f in files]
        if not any(self.sizes):
            raise PgolfError(f"every train shard in {files[0].parent} is empty (0 tokens): nothing to train on")
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

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        """`source` names where the state came from, for errors."""
        if not isinstance(state, dict) or set(state) != {"file_idx", "pos", "n_files"} or not all(
                type(v) is int for v in state.values()):
            raise PgolfError(f"{source}: loader position must be {{file_idx, pos, n_files}} integers, got {state!r}")
        if state["n_files"] != len(self.files):
            raise PgolfError(f"{source} was written with {state['n_files']} train shards, the data dir has {len(self.files)}")
        idx, pos = state["file_idx"], state["pos"]
        if not 0 <= idx < len(self.files) or not 0 <= pos <= self.sizes[idx]:
            raise PgolfError(f"{source}: loader position file_idx={idx} pos={pos} is outside the train shards "
                             f"({len(self.files)} files; that one holds {self.sizes[idx] if 0 <= idx < len(self.files) else 0} tokens)")
        self._open(idx)
        self.pos = pos


class DistributedTokenLoader:
    def __init__(self, data_dir: str | Path, rank: int, world: int, vocab_size: int, device: torch.device):
        files = shards.require_token_shards(data_dir, "train")
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

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        self.stream.load_state_dict(state, source)


def dataset_fingerprint(data_dir: str | Path, tokenizer: str | Path) -> str:
    """What identifies the training data, wherever it lies: the content its manifest lists
    (every shard's name, token count and sha256) and the tokenizer file's sha256. A dataset
    without a pgolf manifest (the published exports) is known by its shards' names and sizes."""
    data_dir = Path(data_dir)
    manifest = data_dir / MANIFEST_NAME
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise PgolfError(f"{manifest}: not a readable dataset manifest ({type(e).__name__}: {e})") from None
    else:
        content = [(p.name, p.stat().st_size) for split in shards.SPLITS for p in shards.list_token_shards(data_dir, split)]
    text = json.dumps({"data": content, "tokenizer": sha256_file(tokenizer)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
