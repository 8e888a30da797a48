"""The validation stream with its canonical per-position bytes, ready to score."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.data import shards
from pgolf.data.manifest import check_split, check_tokenizer
from pgolf.data.tokenizer import Tokenizer
from pgolf.errors import PgolfError
from pgolf.metric.bpb import BPBAccumulator
from pgolf.metric.bytes import load_val_position_bytes


@dataclass
class ValSet:
    tokens: torch.Tensor  # int32 [N]: BOS-separated documents, first token a BOS
    position_bytes: torch.Tensor  # int32 [N]: bytes credited when position t is the target
    byte_source: str  # "lut" or "sidecar"
    bos_id: int

    def __len__(self) -> int:
        return self.tokens.numel()

    def to(self, device: torch.device | str) -> "ValSet":
        return ValSet(self.tokens.to(device), self.position_bytes.to(device), self.byte_source, self.bos_id)

    def accumulator(self, end: int | None = None) -> BPBAccumulator:
        return BPBAccumulator(self.tokens, self.position_bytes, end=end)


def load_val_set(data_dir: str | Path, tokenizer: Tokenizer) -> ValSet:
    """Load and validate all val shards (and the sidecar if the tokenizer needs one).

    A pgolf dataset records its tokenizer's sha256: a different model with the same vocabulary
    size would pass every shard check and still give a wrong val_bpb, so it is refused here.
    """
    check_tokenizer(data_dir, tokenizer.path)
    tokens = shards.load_split(data_dir, "val", vocab_size=tokenizer.vocab_size)
    check_split(data_dir, "val", shards.list_token_shards(data_dir, "val"), int(tokens.size))
    if tokens.size < 2:
        raise PgolfError(f"{data_dir}: the val split holds {tokens.size} tokens; nothing to score")
    if int(tokens[0]) != tokenizer.bos_id:
        raise PgolfError(f"{data_dir}: the val stream must start with BOS (id {tokenizer.bos_id}), found id {int(tokens[0])}")
    position_bytes, source = load_val_position_bytes(data_dir, tokens, tokenizer)
    if int(position_bytes.sum()) <= 0:
        raise PgolfError(f"{data_dir}: the val targets are worth 0 bytes in total ({source}); val_bpb would be undefined")
    return ValSet(torch.from_numpy(tokens.astype(np.int32)), position_bytes, source, tokenizer.bos_id)
