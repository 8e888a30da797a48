"""The n-gram tilt in eval (frontier-spec F1): eval.ngram turned into the score every mode hands
the accumulator.

`build_tilt(cfg.ngram, val, vocab_size, env, order=...)` returns a `ScoreTilt`: with
eval.ngram.enabled false `NO_TILT`, which scores the untilted NLL, so a mode never branches on
the setting; with it on, pgolf.eval.ngram_tilt's `NgramTilt` (that module is the option's own,
imported only here, where it runs: pgolf.export.trace.OPTIONAL).

For a mode's author (the TTT modes reuse this):
- Documents are the val stream split at BOS (`pgolf.eval.ngram_tilt.document_starts`; a document's targets run through
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

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pgolf.config import NgramConfig
from pgolf.distributed import DistEnv
from pgolf.metric.valset import ValSet

if TYPE_CHECKING:  # the n-gram tilt is imported only where it is on (pgolf.export.trace.OPTIONAL)
    from pgolf.eval.ngram_tilt import NgramTilt


def nll_and_log_p(logits: Tensor, targets: Tensor, hint: Tensor | None) -> tuple[Tensor, Tensor | None]:
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
        nll, _ = nll_and_log_p(logits, targets, None)
        return nll, nll.detach()

    def score_transform(self, log_probs: Tensor, positions: Tensor) -> Tensor:
        return log_probs

    def forward_score(self, model: nn.Module, x: Tensor, y: Tensor, positions: Tensor) -> Tensor:
        return model(x, y, reduction="none").view(x.shape)


NO_TILT = NoTilt()


if TYPE_CHECKING:
    ScoreTilt = NoTilt | NgramTilt


def build_tilt(cfg: NgramConfig, val: ValSet, vocab_size: int, env: DistEnv, order=None,
               backend: str = "auto") -> ScoreTilt:
    """The tilt eval.ngram asks for, its state built over the documents of `val` in `order`
    (document indices, see the module docstring; None: file order); NO_TILT when disabled.
    Every rank must call it (rank 0 builds; the others read its file)."""
    if not cfg.enabled:
        return NO_TILT
    from pgolf.eval.ngram_tilt import build_ngram_tilt

    return build_ngram_tilt(cfg, val, vocab_size, env, order, backend)
