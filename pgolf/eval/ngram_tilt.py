"""The n-gram tilt in eval (frontier-spec F1), the option eval.ngram.enabled turns on: the score step
`pgolf.eval.tilt.build_tilt` returns then (the interface and the untilted step are there), its hints
built over the val documents in the order the mode scores them. Imported only where the option runs
(pgolf.export.trace.OPTIONAL), like pgolf.ngram, which builds the state.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.config import NgramConfig
from pgolf.data.shards import doc_starts_at_bos
from pgolf.distributed import DistEnv, broadcast_object
from pgolf.eval.tilt import nll_and_log_p
from pgolf.metric.valset import ValSet
from pgolf.ngram import Hints, NgramSettings
from pgolf.ngram.share import shared_hints
from pgolf.ngram.tilt import tilt_log_probs, tilted_nll


@dataclass
class NgramTilt:
    """The tilt with hints for every stream position (-1: none), on the scoring device."""

    hints: Tensor  # int32 [N]: the hint for the target at each stream position
    beta: float
    fired: int  # positions with a hint
    backend: str  # what built them ("native", "numpy"), or where they came from

    enabled = True

    def hints_at(self, positions: Tensor) -> Tensor:
        return self.hints[positions.long()]

    def score_logits(self, logits: Tensor, targets: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        hint = self.hints_at(positions)
        nll, log_p_hint = nll_and_log_p(logits, targets, hint)
        return nll, tilted_nll(nll.detach(), log_p_hint.detach(), hint, targets, self.beta)

    def score_transform(self, log_probs: Tensor, positions: Tensor) -> Tensor:
        return tilt_log_probs(log_probs, self.hints_at(positions), self.beta)

    def forward_score(self, model: nn.Module, x: Tensor, y: Tensor, positions: Tensor) -> Tensor:
        logits = model.logits(model.hidden(x))
        return self.score_logits(logits, y, positions)[1]


def settings_of(cfg: NgramConfig) -> NgramSettings:
    return NgramSettings(order=int(cfg.order), threshold=float(cfg.threshold), beta=float(cfg.beta))


def build_ngram_tilt(cfg: NgramConfig, val: ValSet, vocab_size: int, env: DistEnv, order=None,
                     backend: str = "auto") -> NgramTilt:
    """pgolf.eval.tilt.build_tilt with eval.ngram on: the hints built once for all ranks
    (pgolf.ngram.share: rank 0 builds, the others memory-map its file)."""
    settings = settings_of(cfg)
    tokens = val.tokens.cpu().numpy()
    with _shared_file(env) as path:
        hints = shared_hints(tokens, vocab_size, path, doc_starts=target_spans(document_starts(tokens, val.bos_id)),
                             order=order, settings=settings, backend=backend)
        return _on_device(hints, val.tokens.device)


def document_starts(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """The eval's documents, as every mode splits the stream: a BOS and the tokens up to the next
    one (a first document at 0 if the stream does not open with BOS; a BOS that is the stream's
    last token starts none). A document's targets run through the next BOS, inclusive."""
    return doc_starts_at_bos(np.asarray(tokens)[:-1], bos_id)


def target_spans(starts: np.ndarray) -> np.ndarray:
    """The n-gram state's document starts: each document's span is its targets (s_d, s_{d+1}], so the
    hint for the next BOS is read from its own document's end, whatever order the documents are
    walked in (position 0, never a target, rides with the first)."""
    return np.concatenate([[0], starts[1:] + 1]).astype(np.int64)


def _on_device(hints: Hints, device: torch.device) -> NgramTilt:
    # a copy: a loaded file is a read-only memory map, and the device wants its own anyway
    token = torch.from_numpy(np.array(hints.token, dtype=np.int32)).to(device)
    return NgramTilt(token, hints.settings.beta, hints.fired, f"{hints.backend} ({hints.source})")


@contextlib.contextmanager
def _shared_file(env: DistEnv) -> Iterator[Path]:
    """A path every rank of one machine agrees on (rank 0's temporary directory), removed once all
    ranks have read it. The hints are a function of the stream and settings, never cached across runs."""
    made = tempfile.mkdtemp(prefix="pgolf-ngram-") if env.is_main else None
    folder = broadcast_object(made, env)
    try:
        yield Path(folder) / "hints.bin"
    finally:
        if env.distributed and dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has its copy before the file goes
        if env.is_main and made is not None and os.path.isdir(made):
            shutil.rmtree(made, ignore_errors=True)
