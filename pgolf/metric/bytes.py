"""Canonical byte accounting: the UTF-8 bytes each scored token stands for (spec §3).

This module is the only place in pgolf that decides how many bytes a token is worth.

Two sources, one output. Both produce `position_bytes`, an int32 tensor aligned with a
token stream: entry t is the bytes credited when the token at position t is the target
(entry 0 is 0: the stream's first token, a BOS, is never a target).

- SentencePiece LUTs, built exactly as the baseline builds them (§3.1), with the
  eval-time rule bytes = base_bytes[tgt] + (has_leading_space[tgt] and not is_boundary[prev]).
  The LUT counts the bytes of the text as the tokenizer's normalizer left it, which is
  what SentencePiece decodes back to (nmt_nfkc folds compatibility characters and
  collapses whitespace runs to one space).
- The byte sidecar (`fineweb_val_bytes_*.bin`), required for transformed tokenizers
  such as CaseOps, whose LUT would count the 3-byte operator characters (§3.4.2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sentencepiece as spm
import torch

from pgolf.data import caseops, shards
from pgolf.data.tokenizer import IDENTITY, Tokenizer
from pgolf.errors import PgolfError

SPACE = "\u2581"  # SentencePiece's whitespace marker


@dataclass(frozen=True)
class ByteLUT:
    base_bytes: torch.Tensor  # int16 [V]: UTF-8 bytes of the piece without its leading marker
    has_leading_space: torch.Tensor  # bool [V]: the piece began with the marker
    is_boundary: torch.Tensor  # bool [V]: control/unknown/unused: no space is credited after it

    @classmethod
    def from_sentencepiece(cls, sp: spm.SentencePieceProcessor, table_size: int | None = None,
                           uncounted: str = "") -> "ByteLUT":
        """The baseline's `build_sentencepiece_luts` rules (§3.1).

        Table size is max(sp vocab, table_size) so a model with a padded vocabulary can
        index it; ids past the tokenizer stay boundaries worth 0 bytes. Characters in
        `uncounted` are worth 0 bytes (CaseOps operators, for training weights only:
        canonical CaseOps scoring uses the sidecar).
        """
        n = sp.vocab_size()
        size = max(n, table_size or 0)
        base = np.zeros(size, dtype=np.int16)
        lead = np.zeros(size, dtype=np.bool_)
        boundary = np.ones(size, dtype=np.bool_)
        for i in range(n):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue  # 0 bytes, stays a boundary
            boundary[i] = False
            if sp.is_byte(i):
                base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith(SPACE):
                lead[i] = True
                piece = piece[1:]
            base[i] = len("".join(ch for ch in piece if ch not in uncounted).encode("utf-8"))
        return cls(torch.from_numpy(base), torch.from_numpy(lead), torch.from_numpy(boundary))

    def to(self, device: torch.device | str) -> "ByteLUT":
        return ByteLUT(*(t.to(device) for t in (self.base_bytes, self.has_leading_space, self.is_boundary)))

    def target_bytes(self, prev: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Bytes credited to each target given the token before it (the eval-time formula)."""
        space = self.has_leading_space[tgt] & ~self.is_boundary[prev]
        return self.base_bytes[tgt].to(torch.int32) + space.to(torch.int32)

    def position_bytes(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(torch.int64)
        out = torch.zeros(tokens.shape, dtype=torch.int32)
        out[1:] = self.target_bytes(tokens[:-1], tokens[1:])
        return out


class TargetByteWeights:
    """Per-target weights for the byte-weighted training loss Σ w_t·CE_t / Σ w_t (PR #1519).

    - "bytes": the bytes canonical accounting credits target t given the token before it,
      leading space included. For CaseOps, whose train shards carry no sidecar, each
      piece's original bytes (operators count 0); this agrees with the sidecar except
      where a piece absorbed a whitespace run or an NFKC-folded character. Targets worth
      0 bytes (BOS, operators) are clamped to 1: the metric still scores their CE, so
      they must keep training (weight 0 would let every other row push them down).
    - "bytes_pr1519": the PR's definition, max(base_bytes[t], 1) from the tokenizer's
      plain LUT: no leading-space byte, and 0-byte targets clamped to 1 (so BOS trains).

    Note that plain mean CE is already proportional to a batch's BPB (Σ CE / Σ bytes);
    weighting changes the objective towards long tokens, it does not make it "the" BPB.
    """

    MODES = ("bytes", "bytes_pr1519")

    def __init__(self, tokenizer: Tokenizer, mode: str):
        if mode not in self.MODES:
            raise PgolfError(f"train.loss_weights must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        uncounted = "".join(caseops.OPERATORS) if (mode == "bytes" and tokenizer.transform != IDENTITY) else ""
        self.lut = ByteLUT.from_sentencepiece(tokenizer.sp, uncounted=uncounted)

    def to(self, device) -> "TargetByteWeights":
        self.lut = self.lut.to(device)
        return self

    def __call__(self, prev: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        if self.mode == "bytes":
            return self.lut.target_bytes(prev, tgt).float().clamp_min(1.0)
        return self.lut.base_bytes[tgt].float().clamp_min(1.0)


def sidecar_position_bytes(sidecar: np.ndarray | torch.Tensor) -> torch.Tensor:
    out = torch.as_tensor(np.asarray(sidecar), dtype=torch.int32).clone()
    if out.numel():
        out[0] = 0  # the first token is never a target
    return out


def position_bytes_for(tokens: np.ndarray, tokenizer: Tokenizer, sidecar: np.ndarray | None) -> tuple[torch.Tensor, str]:
    """Pick the canonical source for a stream and return (position_bytes, source name).

    Untransformed tokenizers use the LUT (the challenge's metric for sp1024/sp8192).
    Transformed ones must have a sidecar; there is no fallback to a LUT, which would
    count the transform's marker characters as text.
    """
    if tokenizer.transform == IDENTITY:
        lut = ByteLUT.from_sentencepiece(tokenizer.sp)
        return lut.position_bytes(torch.from_numpy(np.asarray(tokens, dtype=np.int64))), "lut"
    if sidecar is None:
        raise PgolfError(
            f"tokenizer {tokenizer.path} expects {tokenizer.transform} text, so BPB needs the original-byte "
            "sidecar (fineweb_val_bytes_*.bin) next to the val shards; a LUT would count the transform's markers"
        )
    return sidecar_position_bytes(sidecar), "sidecar"


def load_val_position_bytes(data_dir, tokens: np.ndarray, tokenizer: Tokenizer) -> tuple[torch.Tensor, str]:
    """`position_bytes_for` on a dataset directory, loading (and checking) its sidecar when the tokenizer needs one."""
    sidecar = None
    if tokenizer.transform != IDENTITY and shards.list_sidecar_shards(data_dir):
        sidecar = shards.load_sidecar(data_dir, tokens, tokenizer.bos_id)
    return position_bytes_for(tokens, tokenizer, sidecar)
