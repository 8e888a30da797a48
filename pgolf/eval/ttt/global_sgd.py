"""Distributed SGD on all base parameters over already-scored val spans (challenge-spec §5.14).

Phased TTT's global step ("Phases", step 4; frontier-spec F3) and the sliding-window TTT's
per-chunk training both run here. A span (s, e) of the val stream has inputs tokens[s:e]
and targets at positions s+1..e; a training step reads exactly those tokens.

- The spans' input positions are concatenated in the given order and cut into chunks of
  `chunk_tokens`; a last partial chunk is skipped.
- Each chunk is cut into rows of at most `seq_len` inputs. A model with doc_isolation keeps
  documents apart itself (it restarts at every BOS and row start), so when every span starts
  at a BOS the rows are packed across spans (the records' varlen sequences); otherwise a row
  never crosses a span start. Short rows are padded with loss weight 0, a chunk's last row
  included: the records drop that remainder (frontier-spec F3: 2,048 of 32,768 tokens at
  seq 2560), pgolf trains on it.
- The ranks split each chunk's rows (contiguous shares, at most `batch_seqs` rows per rank
  per step); a step's loss is the CE summed over every rank's real targets divided by their
  total count, so the all-reduced (summed) gradient is the step's mean whatever the world
  size. Every rank takes the same steps, so the replicas stay identical.
- SGD with momentum, gradient clipping on the all-reduced gradient, cosine LR from `lr` at
  the first chunk towards 0 over the chunks, no warmup.

Each step is written to the score ledger with the positions it read (every rank's rows:
the replicas all apply the same, all-reduced update), so C3 is checked, not assumed.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.config import TTTConfig
from pgolf.distributed import DistEnv
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import autocast_for
from pgolf.metric.ledger import ScoreLedger


@dataclass(frozen=True)
class GlobalSGDSettings:
    lr: float
    momentum: float
    epochs: int
    chunk_tokens: int
    batch_seqs: int  # rows per rank per step
    grad_clip: float  # max global grad norm; 0: none
    seq_len: int = 2048  # row length (the records: TTT_EVAL_SEQ_LEN)

    def __post_init__(self):
        if not (self.lr >= 0 and 0 <= self.momentum < 1 and self.grad_clip >= 0
                and min(self.epochs, self.chunk_tokens, self.batch_seqs, self.seq_len) >= 1):
            raise ValueError(f"bad global SGD settings: {self}")

    @classmethod
    def from_config(cls, ttt: TTTConfig) -> "GlobalSGDSettings":
        return cls(lr=ttt.global_lr, momentum=ttt.global_momentum, epochs=ttt.global_epochs,
                   chunk_tokens=ttt.global_chunk_tokens, batch_seqs=ttt.global_batch_seqs,
                   grad_clip=ttt.global_grad_clip, seq_len=ttt.seq_len)


@dataclass(frozen=True)
class Rows:
    """Training rows: input positions (targets are the next positions) and which are real."""
    inputs: Tensor  # int64 [R, L]; padding entries hold position 0
    valid: Tensor  # bool [R, L]; padding only after a row's real entries (causal: never read by them)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def positions_read(self, rows: slice) -> Tensor:
        pos = self.inputs[rows][self.valid[rows]]
        return torch.cat([pos, pos + 1])


def span_positions(spans: Sequence[tuple[int, int]], n_tokens: int) -> tuple[Tensor, Tensor]:
    """The spans' input positions concatenated in order, and a flag on each span's first."""
    for s, e in spans:
        if not 0 <= s < e < n_tokens:
            raise PgolfError(f"TTT span ({s}, {e}) is not inside the val stream of {n_tokens} tokens "
                             "(need 0 <= s < e <= N-1: inputs s..e-1, targets s+1..e)")
    if not spans:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)
    lengths = torch.tensor([e - s for s, e in spans])
    firsts = torch.tensor([s for s, _ in spans])
    offsets = torch.cumsum(lengths, 0) - lengths
    within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(offsets, lengths)
    starts = within == 0
    return torch.repeat_interleave(firsts, lengths) + within, starts


def plan_rows(positions: Tensor, starts: Tensor, seq_len: int, pack: bool) -> Rows:
    """Cut a run of input positions into rows of <= seq_len: at every seq_len-th entry of a
    segment, where a segment is the whole run (pack) or one span (starts flags)."""
    n = positions.numel()
    if n == 0:
        return Rows(torch.zeros(0, seq_len, dtype=torch.int64), torch.zeros(0, seq_len, dtype=torch.bool))
    idx = torch.arange(n)
    breaks = torch.zeros(n, dtype=torch.bool) if pack else starts.clone()
    breaks[0] = True
    seg_start = torch.cummax(torch.where(breaks, idx, 0), 0).values
    col = (idx - seg_start) % seq_len
    row = torch.cumsum(col == 0, 0) - 1
    n_rows = int(row[-1]) + 1
    inputs = torch.zeros(n_rows, seq_len, dtype=torch.int64)
    valid = torch.zeros(n_rows, seq_len, dtype=torch.bool)
    inputs[row, col] = positions
    valid[row, col] = True
    return Rows(inputs, valid)


def packs_spans(model: nn.Module, tokens: Tensor, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether rows may hold several spans: the model isolates documents and each span starts at a BOS."""
    cfg = getattr(model, "cfg", None)
    if not getattr(cfg, "doc_isolation", False) or not spans:
        return False
    firsts = torch.tensor([s for s, _ in spans], device=tokens.device)
    return bool((tokens[firsts] == cfg.bos_id).all())


def cosine_lr(lr: float, chunk: int, chunks: int) -> float:
    """lr at the first chunk, decaying towards 0 over `chunks` chunks."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * chunk / max(chunks, 1)))


@contextlib.contextmanager
def trainable(model: nn.Module) -> Iterator[list[nn.Parameter]]:
    """Every parameter of `model` trainable, in train mode and in fp32; flags, mode and dtypes restored
    after. On CUDA the embedding is stored bf16 (pgolf.model.prepare_for_device): an SGD step of
    lr 1e-3 is far below bf16's resolution (2^-8 relative) and would round away, so the steps are
    taken on an fp32 copy and the sum of them is rounded once at the end (the records train fp32)."""
    if any(getattr(m, "frozen_codes", False) for m in model.modules()):  # pgolf.eval.packed: buffers, not weights
        raise PgolfError("test-time training updates every weight, but this model runs int6 layers from their "
                         "packed codes (pgolf eval --packed), which cannot train: score TTT modes without --packed")
    params = list(model.parameters())
    flags, dtypes, was_training = [p.requires_grad for p in params], [p.dtype for p in params], model.training
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    model.train()
    try:
        yield params
    finally:
        for p, flag, dtype in zip(params, flags, dtypes):
            p.data = p.data.to(dtype)
            p.requires_grad_(flag)
        model.train(was_training)


def _rank_slices(n_rows: int, world: int, batch_seqs: int) -> list[list[slice]]:
    """steps[j][r]: the rows rank r trains on at step j of an epoch (empty slices where a rank is done)."""
    shares = [(n_rows * r // world, n_rows * (r + 1) // world) for r in range(world)]
    steps = -(-max(hi - lo for lo, hi in shares) // batch_seqs)
    return [[slice(min(lo + j * batch_seqs, hi), min(lo + (j + 1) * batch_seqs, hi)) for lo, hi in shares]
            for j in range(steps)]


def _all_reduce_grads(params: list[nn.Parameter], env: DistEnv) -> None:
    for p in params:
        if p.grad is None:  # a parameter this step did not reach (or no rows on this rank)
            p.grad = torch.zeros_like(p)
        if env.distributed:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def sgd_epochs(model: nn.Module, tokens: Tensor, rows: Rows, opt: torch.optim.Optimizer,
               params: list[nn.Parameter], settings: GlobalSGDSettings, ledger: ScoreLedger | None,
               env: DistEnv) -> int:
    """`settings.epochs` passes over `rows`, split across the ranks; returns the steps taken."""
    plan = _rank_slices(len(rows), env.world, settings.batch_seqs)
    device = tokens.device
    taken = 0
    for _ in range(settings.epochs):
        for step in plan:
            total = sum(int(rows.valid[s].sum()) for s in step)  # real targets over all ranks
            mine = step[env.rank]
            opt.zero_grad(set_to_none=True)
            if mine.stop > mine.start:
                idx = rows.inputs[mine].to(device)
                weight = rows.valid[mine].to(device)
                x, y = tokens[idx].long(), tokens[idx + 1].long()
                with autocast_for(device):
                    nll = model(x, y, reduction="none").view(idx.shape).float()
                (torch.where(weight, nll, 0.0).sum() / total).backward()
            _all_reduce_grads(params, env)
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            taken += 1
            if ledger is not None:
                ledger.update(torch.cat([rows.positions_read(s) for s in step]))
    return taken


def global_sgd(model: nn.Module, tokens: Tensor, docs: Sequence[tuple[int, int]], settings: GlobalSGDSettings,
               ledger: ScoreLedger | None, env: DistEnv) -> int:
    """Train every parameter of `model` on the already-scored `docs` (see the module docstring);
    returns the optimizer steps taken. Every rank must call it with the same docs."""
    positions, starts = span_positions(docs, tokens.numel())
    chunks = positions.numel() // settings.chunk_tokens  # a last partial chunk is skipped
    pack = packs_spans(model, tokens, docs)
    steps = 0
    with trainable(model) as params:
        opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum)
        for c in range(chunks):
            part = slice(c * settings.chunk_tokens, (c + 1) * settings.chunk_tokens)
            rows = plan_rows(positions[part], starts[part], settings.seq_len, pack)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(settings.lr, c, chunks)
            steps += sgd_epochs(model, tokens, rows, opt, params, settings, ledger, env)
    return steps
