"""The n-gram tilt in eval (frontier-spec F1): eval.ngram turned into the score every mode hands
the accumulator.

`build_tilt(cfg.ngram, val, vocab_size, env, order=...)` builds the hints once for all ranks
(pgolf.ngram.share: rank 0 builds, the others memory-map its file) and returns a `ScoreTilt`;
with eval.ngram.enabled false it returns `NO_TILT`, which scores the untilted NLL, so a mode
never branches on the setting.

For a mode's author (the TTT modes reuse this):
- Documents are the val stream split at BOS (`document_starts`; a document's targets run through
  the next BOS); `order` lists their indices in the order the mode scores them (its queue order;
  None: file order, which is the windows mode's stream order). The state is built in that order
  (F1.7): a hint is a function of the documents scored before its own and of its own document's
  earlier tokens.
- Hints are looked up by the stream position of the *target* (for inputs at idx, the targets
  are at idx + 1), whatever order the mode scores in.
- `score_logits(logits, targets, positions)` gives (nll, score): train on `nll` (untilted,
  with grad), accumulate `score` (tilted, detached). It takes one logsumexp and two gathers
  of the logits the forward already has; no [.., V] tensor beyond them.
- `score_transform(log_probs, positions)` is the full tilted distribution [.., V] (C2 checks,
  or a mode that already holds log-probabilities).
- `forward_score(model, x, y, positions)` is the windows evaluator's step: the model's own
  eager CE without a tilt (bitwise what it scored before), hidden -> logits -> score_logits
  with one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.config import NgramConfig
from pgolf.distributed import DistEnv, broadcast_object
from pgolf.metric.valset import ValSet
from pgolf.data.shards import doc_starts_at_bos

if TYPE_CHECKING:  # pgolf.ngram is imported only where the tilt is on (pgolf.export.trace.OPTIONAL)
    from pgolf.ngram import Hints, NgramSettings


def _nll_and_log_p(logits: Tensor, targets: Tensor, hint: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """-log p(target) and log p(hint) from logits [..., V], in fp32 (one logsumexp, two gathers)."""
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    nll = lse - z.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    if hint is None:
        return nll, None
    return nll, z.gather(-1, hint.clamp_min(0).long().unsqueeze(-1)).squeeze(-1) - lse


class NoTilt:
    """eval.ngram off: the score is the model's NLL."""

    enabled = False

    def score_logits(self, logits: Tensor, targets: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        nll, _ = _nll_and_log_p(logits, targets, None)
        return nll, nll.detach()

    def score_transform(self, log_probs: Tensor, positions: Tensor) -> Tensor:
        return log_probs

    def forward_score(self, model: nn.Module, x: Tensor, y: Tensor, positions: Tensor) -> Tensor:
        return model(x, y, reduction="none").view(x.shape)


NO_TILT = NoTilt()


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
        from pgolf.ngram.tilt import tilted_nll

        hint = self.hints_at(positions)
        nll, log_p_hint = _nll_and_log_p(logits, targets, hint)
        return nll, tilted_nll(nll.detach(), log_p_hint.detach(), hint, targets, self.beta)

    def score_transform(self, log_probs: Tensor, positions: Tensor) -> Tensor:
        from pgolf.ngram.tilt import tilt_log_probs

        return tilt_log_probs(log_probs, self.hints_at(positions), self.beta)

    def forward_score(self, model: nn.Module, x: Tensor, y: Tensor, positions: Tensor) -> Tensor:
        logits = model.logits(model.hidden(x))
        return self.score_logits(logits, y, positions)[1]


ScoreTilt = NoTilt | NgramTilt


def settings_of(cfg: NgramConfig) -> NgramSettings:
    from pgolf.ngram import NgramSettings

    return NgramSettings(order=int(cfg.order), threshold=float(cfg.threshold), beta=float(cfg.beta))


def build_tilt(cfg: NgramConfig, val: ValSet, vocab_size: int, env: DistEnv, order=None,
               backend: str = "auto") -> ScoreTilt:
    """The tilt eval.ngram asks for, its state built over the documents of `val` in `order`
    (document indices, see the module docstring; None: file order); NO_TILT when disabled.
    Every rank must call it (rank 0 builds; the others read its file)."""
    if not cfg.enabled:
        return NO_TILT
    from pgolf.ngram.share import shared_hints

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
