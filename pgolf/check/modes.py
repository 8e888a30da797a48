"""Eval modes as the compliance checks see them: what was scored, under which distribution.

A mode scores a token stream with a model and returns `Scored`: each scored target's
stream position, the loss it handed the accumulator, the full-vocabulary log-probability
vector that loss was taken under, and the mode's score ledger (C3). The conditions in
`pgolf.check.conditions` work on this record only, so a new eval mode (the score-first
TTT, calibration and n-gram tilt of the evaluation issue) is checked by writing one more
`EvalMode` here.

- `WindowsMode` runs pgolf's own evaluator (`pgolf.eval.evaluator.evaluate`: flat stream,
  non-overlapping or sliding windows, or document-isolated ones) with the eval's own score step
  (`pgolf.eval.tilt`: the n-gram tilt when eval.ngram is on, rebuilt for every stream it is
  given) through a recording wrapper and accumulator, so the product's code path is what is
  checked; the distribution recorded next to each score is computed apart from it.
- `PackedDocsMode` is the document batching of the records' TTT path (challenge-spec
  §5.14 step 1): split at BOS, sort by length (longest first), pack into rows, score with
  the model's document isolation. Its neighbours in a row are not its stream prefix, so
  any leak across a BOS (SmearGate without the BOS mask) reaches from later documents. With
  `ngram`, the tilt's state is built in that length-sorted order (`doc_order`), as a TTT mode
  must build it (frontier-spec F1.7). Such a mode keeps a state across documents in an order
  that is not the stream's, so C1 holds in its scoring order (the second C1 row), while the
  stream-order C1 row fails by construction (F1.7's "no single order"); global TTT is the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import NgramConfig, TTTConfig
from pgolf.distributed import DistEnv
from pgolf.eval.evaluator import evaluate
from pgolf.eval.ngram_tilt import document_starts
from pgolf.eval.tilt import NO_TILT, build_tilt
from pgolf.eval.windows import plan_doc_windows
from pgolf.metric.bpb import BPBAccumulator, BPBResult
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.valset import ValSet

if TYPE_CHECKING:
    from pgolf.eval.tilt import ScoreTilt


@dataclass
class Scored:
    positions: Tensor  # int64 [M]: target positions, in scoring order
    nll: Tensor  # float32 [M]: the loss handed to the accumulator
    logprobs: Tensor  # float32 [M, V]: the distribution each loss was taken under
    ledger: ScoreLedger


class EvalMode(Protocol):
    name: str
    reorders: bool  # scores documents in an order of its own (C1 is then judged in that order only)

    def score(self, model: nn.Module, tokens: Tensor) -> Scored: ...


def distribution(model: nn.Module, x: Tensor) -> Tensor:
    """Full-vocabulary log-probabilities [B, T, V] of a pgolf GPT-like model (hidden -> logits)."""
    return F.log_softmax(model.logits(model.hidden(x)).float(), dim=-1)


class _RecordingTilt:
    """Wraps the eval's score step (pgolf.eval.tilt) for `evaluate`: the real scoring forward, plus,
    in order, the full distribution each score was taken under, computed apart from it (the
    model's log-softmax, tilted over the whole vocabulary by pgolf.ngram.tilt when a tilt is on)."""

    def __init__(self, tilt: ScoreTilt):
        self.inner = tilt
        self.logprobs: list[Tensor] = []

    def forward_score(self, model: nn.Module, x: Tensor, y: Tensor, positions: Tensor) -> Tensor:
        lp = self.inner.score_transform(distribution(model, x), positions)
        self.logprobs.append(lp.float().reshape(-1, lp.size(-1)))
        return self.inner.forward_score(model, x, y, positions)


def _tilt_for(ngram: NgramConfig | None, tokens: Tensor, bos_id: int, vocab_size: int, order) -> ScoreTilt:
    """The eval's tilt for this stream (rebuilt for every stream a check scores: perturbed ones too)."""
    if ngram is None or not ngram.enabled:
        return NO_TILT
    view = ValSet(tokens, torch.zeros_like(tokens, dtype=torch.int32), "none", bos_id)
    return build_tilt(ngram, view, vocab_size, DistEnv(0, 1, 0, tokens.device), order=order)


class _RecordingAccumulator(BPBAccumulator):
    """Keeps every add() and does not judge coverage: the C4 check does, from the record."""

    def __init__(self, tokens: Tensor, position_bytes: Tensor):
        super().__init__(tokens, position_bytes)
        self.adds: list[tuple[Tensor, Tensor, Tensor | None]] = []

    def add(self, nll, positions, targets=None, mask=None) -> None:
        self.adds.append((nll.reshape(-1), positions.reshape(-1), None if mask is None else mask.reshape(-1)))

    def result(self, group=None) -> BPBResult:
        return BPBResult(0.0, 1, 1)


class _StreamView:
    """What `evaluate` needs of a ValSet, with a recording accumulator."""

    def __init__(self, tokens: Tensor):
        self.tokens = tokens
        self.acc = _RecordingAccumulator(tokens, torch.zeros_like(tokens, dtype=torch.int32))

    def __len__(self) -> int:
        return self.tokens.numel()

    def accumulator(self, end=None) -> BPBAccumulator:
        return self.acc


@dataclass
class WindowsMode:
    """pgolf's windows mode: flat-stream windows or, with doc_isolated, each document's own; with
    `ngram` enabled the score is tilted by hints built in the mode's document order (`doc_order`)."""

    seq_len: int
    stride: int = 0
    windows_per_batch: int = 8
    doc_isolated: bool = False
    ngram: NgramConfig | None = None
    bos_id: int = 1
    reorders = False

    @property
    def name(self) -> str:
        extras = (", doc-isolated" if self.doc_isolated else "") + (", n-gram tilt" if _tilted(self.ngram) else "")
        return f"windows(seq_len={self.seq_len}, stride={self.stride or self.seq_len}{extras})"

    def doc_order(self, tokens: Tensor):
        """The documents' scoring order the n-gram state is built in: stream order (None)."""
        return None

    @torch.no_grad()
    def score(self, model: nn.Module, tokens: Tensor) -> Scored:
        tilt = _tilt_for(self.ngram, tokens, self.bos_id, model.cfg.vocab_size, self.doc_order(tokens))
        view, rec = _StreamView(tokens), _RecordingTilt(tilt)
        plan = plan_doc_windows(tokens, self.bos_id, self.seq_len, self.stride) if self.doc_isolated else None
        evaluate(model, view, self.seq_len, self.stride, self.windows_per_batch, tilt=rec, plan=plan)
        if len(rec.logprobs) != len(view.acc.adds):
            raise RuntimeError("evaluate made a different number of forwards and accumulator adds")
        pos, nll, lp = [], [], []
        for logprobs, (loss, positions, mask) in zip(rec.logprobs, view.acc.adds):
            keep = torch.ones_like(positions, dtype=torch.bool) if mask is None else mask
            pos.append(positions[keep])
            nll.append(loss[keep].float())
            lp.append(logprobs[keep])
        return _scored(tokens, torch.cat(pos), torch.cat(nll), torch.cat(lp))


def _tilted(ngram: NgramConfig | None) -> bool:
    return ngram is not None and ngram.enabled


def _scored(tokens: Tensor, positions: Tensor, nll: Tensor, logprobs: Tensor) -> Scored:
    ledger = ScoreLedger(tokens.numel())
    ledger.scored(positions)  # no adaptation: every score is taken with 0 updates applied
    return Scored(positions, nll, logprobs, ledger)


def document_pieces(tokens: Tensor, bos_id: int, max_len: int) -> list[tuple[int, int]]:
    """(start, length) input spans: each document from its BOS up to the next BOS (its last
    target), cut into pieces of at most `max_len` inputs; targets are the next positions."""
    n = tokens.numel()
    starts = torch.nonzero(tokens == bos_id).flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    ends = [*starts[1:], n - 1]  # inputs of a document: [start, next BOS); targets up to that BOS
    pieces = []
    for a, b in zip(starts, ends):
        pieces += [(s, min(max_len, b - s)) for s in range(a, b, max_len)]
    return pieces


@dataclass
class PackedDocsMode:
    """Documents sorted by length (longest first) and packed into rows of `seq_len` inputs."""

    seq_len: int
    bos_id: int
    rows_per_batch: int = 8
    ngram: NgramConfig | None = None  # the n-gram tilt, its state built in this mode's document order
    reorders = False  # a check tool: the strict stream-order C1 applies (a tilt built in its order fails it)

    @property
    def name(self) -> str:
        return f"docs(seq_len={self.seq_len}, length-sorted packing{', n-gram tilt' if _tilted(self.ngram) else ''})"

    def doc_order(self, tokens: Tensor):
        """Document indices (as split at BOS) in the order the rows score them (first piece first)."""
        starts = torch.from_numpy(document_starts(tokens.numpy(), self.bos_id))
        seen: dict[int, None] = {}
        for row in self.rows(tokens):
            for start, _ in row:
                seen.setdefault(int(torch.searchsorted(starts, start, right=True)) - 1)
        return np.array(list(seen), dtype=np.int64)

    def rows(self, tokens: Tensor) -> list[list[tuple[int, int]]]:
        pieces = sorted(document_pieces(tokens, self.bos_id, self.seq_len), key=lambda p: -p[1])
        rows, fill = [], self.seq_len
        for piece in pieces:
            # a continuation piece (no BOS of its own) must start a row: isolation splits only at BOS
            if fill + piece[1] > self.seq_len or int(tokens[piece[0]]) != self.bos_id:
                rows.append([])
                fill = 0
            rows[-1].append(piece)
            fill += piece[1]
        return rows

    @torch.no_grad()
    def score(self, model: nn.Module, tokens: Tensor) -> Scored:
        rows = self.rows(tokens)
        tilt = _tilt_for(self.ngram, tokens, self.bos_id, model.cfg.vocab_size,
                         self.doc_order(tokens) if _tilted(self.ngram) else None)
        was_training = model.training
        model.eval()
        pos, nll, lp = [], [], []
        try:
            for lo in range(0, len(rows), self.rows_per_batch):
                batch = rows[lo:lo + self.rows_per_batch]
                x = torch.full((len(batch), self.seq_len), self.bos_id, dtype=torch.int64)  # padding: lone BOS
                tgt_pos = torch.full_like(x, -1)
                for r, row in enumerate(batch):
                    col = 0
                    for start, length in row:
                        x[r, col:col + length] = tokens[start:start + length]
                        tgt_pos[r, col:col + length] = torch.arange(start + 1, start + length + 1)
                        col += length
                keep = tgt_pos >= 0
                y = torch.where(keep, tokens[tgt_pos.clamp_min(0)].long(), 0)
                loss = model(x, y, reduction="none").view(x.shape)
                logprobs = distribution(model, x)
                if tilt.enabled:  # the eval's tilted score, and the tilted distribution apart from it
                    at = tgt_pos.clamp_min(0)
                    loss = tilt.score_logits(model.logits(model.hidden(x)), y, at)[1]
                    logprobs = tilt.score_transform(logprobs, at)
                pos.append(tgt_pos[keep])
                nll.append(loss[keep].float())
                lp.append(logprobs[keep])
        finally:
            model.train(was_training)
        return _scored(tokens, torch.cat(pos), torch.cat(nll), torch.cat(lp))


class _StreamValSet(_StreamView):
    """A ValSet stand-in for the TTT engines: the stream, its BOS id and a recording accumulator."""

    def __init__(self, tokens: Tensor, bos_id: int):
        super().__init__(tokens)
        self.bos_id = bos_id


def _kept(adds, logprobs: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(positions, nll, log-probs) of the scored entries: the accumulator's adds (with their masks)
    paired, in order, with the distribution recorded at each of them."""
    if len(adds) != len(logprobs):
        raise RuntimeError(f"the mode made {len(adds)} accumulator adds but {len(logprobs)} recorded scorings")
    pos, nll, lp = [], [], []
    for (loss, positions, mask), dist_ in zip(adds, logprobs):
        keep = torch.ones_like(positions, dtype=torch.bool) if mask is None else mask
        pos.append(positions[keep])
        nll.append(loss[keep].float())
        lp.append(dist_.reshape(-1, dist_.size(-1))[keep].float())
    return torch.cat(pos), torch.cat(nll), torch.cat(lp)


@dataclass
class LoraTTTMode:
    """pgolf's score-first per-document LoRA TTT (eval.mode=lora_ttt) run by the product's engine on
    the stream: each score's full distribution is the one the engine scored under (recorded at its
    score transform, the n-gram tilt included), and the engine's own ledger is judged for C3. It
    scores documents in its queue order (length-sorted), so C1 is judged in that order."""

    ttt: TTTConfig
    bos_id: int
    ngram: NgramConfig | None = None
    reorders = True

    @property
    def name(self) -> str:
        t = self.ttt
        return (f"lora_ttt(window {t.seq_len}, chunk {t.chunk_size}, rank {t.lora_rank}, {t.phases} phases"
                f"{', n-gram tilt' if _tilted(self.ngram) else ''})")

    def doc_order(self, tokens: Tensor):
        from pgolf.eval.ttt.documents import queue_document_indices

        return queue_document_indices(_StreamValSet(tokens, self.bos_id), self.ttt)

    def score(self, model: nn.Module, tokens: Tensor) -> Scored:
        from pgolf.eval.ttt.engine import run_lora_ttt
        from pgolf.eval.ttt.phases import global_step_for

        tilt = _tilt_for(self.ngram, tokens, self.bos_id, model.cfg.vocab_size,
                         self.doc_order(tokens) if _tilted(self.ngram) else None)
        recorded: list[Tensor] = []

        def transform(log_probs: Tensor, positions: Tensor) -> Tensor:
            out = tilt.score_transform(log_probs, positions)
            recorded.append(out.detach())
            return out

        view = _StreamValSet(tokens, self.bos_id)
        report = run_lora_ttt(model, view, self.ttt, DistEnv(0, 1, 0, tokens.device), score_transform=transform,
                              global_step=global_step_for(self.ttt))
        return Scored(*_kept(view.acc.adds, recorded), report.ledger)


class _ScoringRecorder(nn.Module):
    """The model as a score-then-train mode sees it: every forward without gradients (a scoring
    one) also records the full distribution it scores under; training forwards pass through."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model
        self.cfg = model.cfg
        self.logprobs: list[Tensor] = []

    def forward(self, x: Tensor, y: Tensor, reduction: str = "mean", **kw) -> Tensor:
        if not torch.is_grad_enabled():
            self.logprobs.append(distribution(self.inner, x).detach())
        return self.inner(x, y, reduction=reduction, **kw)


@dataclass
class SlidingTTTMode:
    """pgolf's sliding-window score-first SGD TTT (eval.mode=sliding_ttt) on the stream, through the
    product's mode function; stream order, so both C1 rows apply."""

    seq_len: int
    stride: int
    ttt: TTTConfig
    bos_id: int
    batch_tokens: int = 4096
    reorders = False

    @property
    def name(self) -> str:
        return (f"sliding_ttt(seq_len={self.seq_len}, stride={self.stride or self.seq_len}, "
                f"chunk {self.ttt.sliding_chunk_tokens}, {self.ttt.sliding_epochs} epochs)")

    def score(self, model: nn.Module, tokens: Tensor) -> Scored:
        from pgolf.config import EvalConfig
        from pgolf.eval.modes import EvalContext
        from pgolf.eval.ttt.sliding import sliding_ttt_mode

        cfg = EvalConfig(mode="sliding_ttt", stride=self.stride, batch_tokens=self.batch_tokens, ttt=self.ttt)
        view, recorder = _StreamValSet(tokens, self.bos_id), _ScoringRecorder(model)
        outcome = sliding_ttt_mode(EvalContext(recorder, view, cfg, min(self.seq_len, tokens.numel() - 1),
                                               DistEnv(0, 1, 0, tokens.device)))
        return Scored(*_kept(view.acc.adds, recorder.logprobs), outcome.ledger)
