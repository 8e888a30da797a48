"""The score-first per-document LoRA TTT engine (challenge-spec §5.14, frontier-spec F3/F4).

Per batch of documents (claimed from the shared queue, see documents.py and claims.py): reset
the LoRA (B = 0; A kept when eval.ttt.warm_start_a, else redrawn; fresh optimizer state), then
for chunk ci = 0, 1, ... of every document, all documents of the batch together:

1. forward the window: the last <= ttt.seq_len input tokens of the document ending at the
   chunk's last target (right-padded; the model is causal, so padding changes nothing);
2. score the chunk's <= chunk targets through the canonical accumulator and `ledger.scored`
   (with the optional `score_transform`, which touches the score only);
3. then, unless it is the document's last chunk, grad_steps AdamW steps on the chunk's mean CE
   (summed over the documents still training), each one `ledger.update` with the positions
   its window read. The first step reuses the scoring forward; later ones run it again.

Documents' BOS positions are public before any update (like position 0 in the ledger): the
split at BOS, the length sort and the chunk schedule all read them before anything is scored.
So every update's reads reach the ledger without them (`PublicBOS`), the engine's own and the
global SGD's alike; every other position read must have been scored first.

Phases (global SGD on the base model): with b_k = ⌊prefix·k/phases⌋ documents in queue order,
the engine pauses before the first batch that holds none of the first b_k documents: a rank
that claims that batch (or a later one) waits, holding its claim, until every rank has, so
exactly the batches before it are scored before the phase, whatever the number of ranks. The
ranks gather which batches each scored (each rank's ledger then also marks its peers' scored
prefix positions: they were scored before the update reads them), call `global_sgd` on the
first b_k documents, and continue with a fresh LoRA (new A). A phase whose batch would be past
the queue's end is skipped: every document is scored by then, nothing could use it.

Determinism: each document's score depends only on its batch, the base model and its A. A is
drawn from a seeded generator (at the start, after each phase, and per batch without the warm
start), so without warm-start A the score is the same for any number of ranks. With it (the
records' setting), A carries over from the batches the same rank ran before, as in the records.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from pgolf.config import TTTConfig
from pgolf.distributed import DistEnv
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import autocast_for
from pgolf.eval.ttt.claims import BatchClaimer
from pgolf.eval.ttt.chunks import Window, chunk_window
from pgolf.eval.ttt.documents import (PublicBOS, batch_queue, chunk_size_for, parse_short_doc_chunks,
                                      phase_boundaries, split_documents)
from pgolf.metric.bpb import BPBAccumulator, BPBResult
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.valset import ValSet
from pgolf.model.gpt import GPT
from pgolf.model.lora import DocLoRA, LoRAModel, LoRASites

# (log_probs [B, T, V] fp32, positions [B, T]) -> log_probs, on a chunk's target columns: positions are
# the targets' stream positions (a column not scored carries a position of the same window, ignored).
ScoreTransform = Callable[[Tensor, Tensor], Tensor]
# (model, tokens, docs as (s, e) in queue order, ledger, env) -> steps taken; collective over ranks.
# The ledger it gets takes `update(positions read)` per step (a PublicBOS over the rank's ledger).
GlobalStep = Callable[[GPT, Tensor, Sequence[tuple[int, int]], "PublicBOS", DistEnv], int]


@dataclass
class TTTReport:
    result: BPBResult
    ledger: ScoreLedger  # this rank's
    batches: int  # batches this rank ran
    updates: int  # LoRA optimizer steps on this rank
    phase_steps: list[int]  # global SGD steps of each phase run
    bos_targets: int  # document-boundary BOS targets scored (all ranks); see documents.py
    bos_loss_sum: float  # their CE (nats, all ranks)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def records_comparable_bpb(self) -> float:
        """val_bpb without the BOS targets the records do not score (same bytes: BOS is worth 0)."""
        return (self.result.loss_sum - self.bos_loss_sum) / (math.log(2) * self.result.byte_count)


def lora_sites(ttt: TTTConfig) -> LoRASites:
    return LoRASites(q=ttt.q_lora, k=ttt.k_lora, v=ttt.v_lora, o=ttt.o_lora, mlp=ttt.mlp_lora, head=ttt.head_lora)


_DRAWS = {"start": 0, "phase": 1, "batch": 2}


def _generator(seed: int, kind: str, index: int = 0) -> torch.Generator:
    """The generator of one A draw, the same on every rank: at the start, after phase k, for batch i."""
    return torch.Generator().manual_seed(((seed * 4 + _DRAWS[kind]) << 32) + index)


def _plain_nll(logits: Tensor, y: Tensor, positions: Tensor, ce: Tensor) -> Tensor:
    return ce.detach()


class BatchRunner:
    """Runs one document batch: score each chunk, then train the batch's LoRA on it."""

    def __init__(self, lm: LoRAModel, opt: torch.optim.Optimizer, acc: BPBAccumulator, ledger: PublicBOS,
                 ttt: TTTConfig, score_transform: ScoreTransform | None, bos_id: int, bos: Tensor):
        self.lm, self.opt, self.acc, self.ledger, self.ttt = lm, opt, acc, ledger, ttt
        self.nll = _plain_nll if score_transform is None else self._transformed(score_transform)
        self.bos_id, self.bos = bos_id, bos  # bos: [2] float64 running (count, loss) of BOS targets
        self.updates = 0

    @staticmethod
    def _transformed(transform: ScoreTransform):
        def nll(logits: Tensor, y: Tensor, positions: Tensor, ce: Tensor) -> Tensor:
            with torch.no_grad():
                lp = transform(F.log_softmax(logits.detach().float(), dim=-1), positions)
                return -lp.gather(-1, y[..., None]).squeeze(-1)
        return nll

    def forward(self, w: Window) -> tuple[Tensor, Tensor, Tensor]:
        """(chunk logits [b, c, V] fp32, chunk targets [b, c], CE [b, c]); the head runs on the chunk only."""
        with autocast_for(w.x.device):
            h = self.lm.hidden(w.x)
            hc = h.gather(1, w.cols[..., None].expand(-1, -1, h.size(-1)))
            logits = self.lm.logits(hc)
        yc = w.y.gather(1, w.cols)
        ce = F.cross_entropy(logits.flatten(0, 1), yc.reshape(-1), reduction="none").view(yc.shape)
        return logits, yc, ce

    def score(self, w: Window, logits: Tensor, yc: Tensor, ce: Tensor) -> None:
        nll = self.nll(logits, yc, w.positions, ce)
        self.acc.add(nll, w.positions, mask=w.scored)
        self.ledger.scored(w.positions[w.scored])
        at_bos = w.scored & (yc == self.bos_id)
        self.bos += torch.stack([at_bos.sum().double(), torch.where(at_bos, nll.double(), 0.0).sum()])

    def train(self, w: Window, ce: Tensor | None) -> None:
        """grad_steps steps on the chunk's mean CE per training document, summed over them."""
        rows = w.train_rows
        if not bool(rows.any()):
            return
        mask = w.scored & rows[:, None]
        read = (w.start[rows].cpu().numpy(), w.last[rows].cpu().numpy())  # inputs start..last-1, targets ..last
        for step in range(self.ttt.grad_steps):
            if ce is None or step > 0:
                ce = self.forward(w)[2]
            per_doc = (ce * mask).sum(1) / mask.sum(1).clamp(min=1)
            self.opt.zero_grad(set_to_none=True)
            per_doc.sum().backward()
            self.opt.step()
            self.ledger.update_ranges(*read)
            self.updates += 1

    def chunk(self, w: Window) -> None:
        """Score first, then update (C3)."""
        logits, yc, ce = self.forward(w)
        self.score(w, logits, yc, ce)
        self.train(w, ce)


def _frozen(model: GPT, frozen: bool, trainable: dict) -> None:
    """Freeze the base (remembering, the first time, which parameters trained), or restore that."""
    for name, p in model.named_parameters():
        if frozen:
            trainable.setdefault(name, p.requires_grad)
            p.requires_grad_(False)
        else:
            p.requires_grad_(trainable.get(name, True))


class LoRATTT:
    """One run of the engine over the val stream on this rank (collective across ranks)."""

    def __init__(self, model: GPT, val: ValSet, ttt: TTTConfig, env: DistEnv, score_transform, global_step, seed):
        if ttt.chunk_size > ttt.seq_len:
            raise PgolfError(f"eval.ttt.chunk_size ({ttt.chunk_size}) is longer than eval.ttt.seq_len ({ttt.seq_len})")
        self.schedule = parse_short_doc_chunks(ttt.short_doc_chunks)
        if any(chunk > ttt.seq_len for _, chunk in self.schedule):
            raise PgolfError(f"eval.ttt.short_doc_chunks: a chunk is longer than eval.ttt.seq_len ({ttt.seq_len})")
        self.model, self.val, self.ttt, self.env, self.seed = model, val, ttt, env, seed
        self.docs = split_documents(val.tokens, val.bos_id)
        self.queue = batch_queue(self.docs, ttt.batch_docs)
        self.order = [d for batch in self.queue for d in batch]
        bounds = phase_boundaries(len(self.docs), ttt)
        self.phases = [(b, -(-b // ttt.batch_docs)) for b in bounds if -(-b // ttt.batch_docs) < len(self.queue)]
        if self.phases and global_step is None:
            raise PgolfError(f"eval.ttt.phases={ttt.phases} needs the global SGD step (pgolf.eval.ttt.global_sgd)")
        self.global_step, self.score_transform = global_step, score_transform
        self.lora = DocLoRA(model, min(ttt.batch_docs, len(self.docs)), ttt.lora_rank, ttt.lora_alpha,
                            lora_sites(ttt)).to(val.tokens.device)
        self.lora.reset(True, _generator(seed, "start"))
        self.lm = LoRAModel(model, self.lora)
        self.acc, self.ledger = val.accumulator(), PublicBOS(ScoreLedger(len(val)), self.docs)
        self.bos = torch.zeros(2, dtype=torch.float64, device=val.tokens.device)
        self.done: list[int] = []
        self.updates, self.phase_steps = 0, []
        self.seconds = {"ttt": 0.0, "global_sgd": 0.0}

    def optimizer(self) -> torch.optim.Optimizer:
        t = self.ttt
        return torch.optim.AdamW(self.lora.parameters(), lr=t.lora_lr, betas=(t.beta1, t.beta2), eps=t.eps,
                                 weight_decay=t.weight_decay)

    def run_batch(self, i: int) -> None:
        batch = self.queue[i]
        self.lora.reset(not self.ttt.warm_start_a, _generator(self.seed, "batch", i))
        runner = BatchRunner(self.lm, self.optimizer(), self.acc, self.ledger, self.ttt, self.score_transform,
                             self.val.bos_id, self.bos)
        chunk = chunk_size_for(batch, self.ttt, self.schedule)
        ci = 0
        while (w := chunk_window(self.val.tokens, batch, ci, chunk, self.ttt.seq_len)) is not None:
            runner.chunk(w)
            ci += 1
        self.updates += runner.updates
        self.done.append(i)

    def run_phase(self, k: int, trainable: dict) -> None:
        n_docs, first_after = self.phases[k]
        done = set(self.done)
        if self.env.distributed:
            lists = [None] * dist.get_world_size()
            dist.all_gather_object(lists, self.done)
            done = set().union(*map(set, lists))
        if not set(range(first_after)) <= done:
            raise PgolfError(f"TTT phase {k + 1}: batches before {first_after} were not all scored")
        mine, prefix = set(self.done), self.order[:n_docs]
        wanted = set(prefix)
        elsewhere = [d for i in range(first_after) if i not in mine for d in self.queue[i] if d in wanted]
        if elsewhere:  # peers scored these before this update reads them
            self.ledger.scored(np.concatenate([np.arange(d.start + 1, d.end + 1) for d in elsewhere]))
        t = time.perf_counter()
        _frozen(self.model, False, trainable)
        self.phase_steps.append(self.global_step(self.model, self.val.tokens, [(d.start, d.end) for d in prefix],
                                                 self.ledger, self.env))
        _frozen(self.model, True, trainable)
        self.model.eval()
        self.lora.reset(True, _generator(self.seed, "phase", k))  # a fresh LoRA after the phase
        self.seconds["global_sgd"] += time.perf_counter() - t

    def run(self) -> TTTReport:
        t0, trainable = time.perf_counter(), {}
        was_training = self.model.training
        self.model.eval()
        _frozen(self.model, True, trainable)
        try:
            claims, phase = BatchClaimer(self.env.distributed), 0
            while True:
                i = claims.next()
                while phase < len(self.phases) and i >= self.phases[phase][1]:
                    self.run_phase(phase, trainable)
                    phase += 1
                if i >= len(self.queue):
                    break
                self.run_batch(i)
        finally:
            _frozen(self.model, False, trainable)
            self.model.train(was_training)
        result = self.acc.result()
        bos = self.bos.clone()
        if self.env.distributed:
            dist.all_reduce(bos)
        self.seconds["ttt"] = time.perf_counter() - t0 - self.seconds["global_sgd"]
        return TTTReport(result, self.ledger.ledger, len(self.done), self.updates, self.phase_steps, int(bos[0]),
                         float(bos[1]), self.seconds)


def run_lora_ttt(model: GPT, val: ValSet, ttt: TTTConfig, env: DistEnv, *,
                 score_transform: ScoreTransform | None = None, global_step: GlobalStep | None = None,
                 seed: int = 0) -> TTTReport:
    """Score `val` with score-first per-document LoRA TTT (see the module docstring).

    `model` must walk the plan eval uses (recurrence on); its parameters are frozen while the
    LoRA trains and changed only by `global_step` in the phases (needed when eval.ttt.phases > 0).
    `score_transform` (n-gram tilt, calibration) maps the chunk's log-probabilities before scoring
    and never touches the training loss.
    """
    return LoRATTT(model, val, ttt, env, score_transform, global_step, seed).run()
