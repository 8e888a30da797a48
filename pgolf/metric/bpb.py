"""The BPB accumulator every eval mode scores through (spec §3.2, §1.5).

An eval mode hands it, per batch, the natural-log cross-entropy of each scored target and
that target's absolute position in the val stream. Bytes come from the stream's
`position_bytes` (see `pgolf.metric.bytes`), never from the caller, so every mode counts
bytes the same way. Sums are float64 and all-reduced across ranks.

It also makes the compliance rule "every token scored exactly once" (C4) a checked fact:
it counts how often each position was scored and, optionally, that the caller's targets
are the stream's tokens at those positions. `result()` refuses to return a number if any
target in [1, end) was skipped or scored twice, anything outside it was scored, or a
target did not match. All checks stay on the device until `result()`: no host syncs per
batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pgolf.errors import PgolfError


@dataclass(frozen=True)
class BPBResult:
    loss_sum: float  # sum of CE over scored targets, nats
    token_count: int
    byte_count: int

    @property
    def val_loss(self) -> float:
        return self.loss_sum / self.token_count

    @property
    def val_bpb(self) -> float:
        return self.loss_sum / (math.log(2) * self.byte_count)

    @property
    def bytes_per_token(self) -> float:
        return self.byte_count / self.token_count

    def as_dict(self) -> dict:
        return dict(val_loss=self.val_loss, val_bpb=self.val_bpb, loss_sum=self.loss_sum,
                    token_count=self.token_count, byte_count=self.byte_count, bytes_per_token=self.bytes_per_token)


class BPBAccumulator:
    """Scores positions [1, end) of a token stream; see the module docstring."""

    def __init__(self, tokens: torch.Tensor, position_bytes: torch.Tensor, end: int | None = None):
        if tokens.shape != position_bytes.shape or tokens.ndim != 1:
            raise ValueError(f"tokens {tuple(tokens.shape)} and position_bytes {tuple(position_bytes.shape)} must be equal 1-D shapes")
        n = tokens.numel()
        self.end = n if end is None else end
        if not 1 < self.end <= n:
            raise ValueError(f"end={self.end} must be in (1, {n}]")
        self.tokens = tokens
        self.position_bytes = position_bytes
        device = tokens.device
        self._sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, bytes
        self._mismatches = torch.zeros((), dtype=torch.int64, device=device)
        self._coverage = torch.zeros(n, dtype=torch.int32, device=device)
        self._ones = torch.ones(0, dtype=torch.int32, device=device)

    def add(self, nll: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> None:
        """Record per-target CE (nats) for targets at absolute stream `positions`.

        `mask` (bool, same shape) scores only the True entries, without the host sync a
        boolean index would cost; masked-out positions must still be valid indices. Pass
        `targets` (the ids the CE was computed against) when an eval mode builds them
        other than as tokens[positions]: they are checked against the stream.
        """
        nll = nll.reshape(-1)
        positions = positions.reshape(-1).to(torch.int64)
        if nll.numel() != positions.numel():
            raise ValueError(f"{nll.numel()} losses for {positions.numel()} positions")
        if positions.numel() == 0:
            return
        if mask is None:
            counts = self._ones_like(positions)
            loss, nbytes = nll.to(torch.float64), self.position_bytes[positions].to(torch.float64)
        else:
            mask = mask.reshape(-1)
            counts = mask.to(torch.int32)
            loss = torch.where(mask, nll.to(torch.float64), 0.0)
            nbytes = torch.where(mask, self.position_bytes[positions].to(torch.float64), 0.0)
        # index_add_ bounds-checks positions (a negative index would otherwise wrap in the gathers).
        self._coverage.index_add_(0, positions, counts)
        self._sums[0] += loss.sum()
        self._sums[1] += nbytes.sum()
        if targets is not None:
            wrong = self.tokens[positions] != targets.reshape(-1).to(self.tokens.dtype)
            self._mismatches += (wrong if mask is None else wrong & mask).sum()

    def _ones_like(self, positions: torch.Tensor) -> torch.Tensor:
        if self._ones.numel() < positions.numel():
            self._ones = torch.ones(positions.numel(), dtype=torch.int32, device=self._coverage.device)
        return self._ones[: positions.numel()]

    def result(self, group: dist.ProcessGroup | None = None) -> BPBResult:
        """All-reduce across ranks (when distributed), check coverage, return the totals."""
        sums, mismatches, coverage = self._sums.clone(), self._mismatches.clone(), self._coverage.clone()
        if dist.is_available() and dist.is_initialized():
            for t in (sums, mismatches, coverage):
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        if int(mismatches) != 0:
            raise PgolfError(f"{int(mismatches)} scored targets differ from the val tokens at their positions (misaligned eval)")
        _check_coverage(coverage, self.end)
        token_count = self.end - 1
        byte_count = float(sums[1])
        if byte_count != round(byte_count) or byte_count <= 0:
            raise PgolfError(f"byte count {byte_count} is not a positive integer")
        return BPBResult(loss_sum=float(sums[0]), token_count=token_count, byte_count=int(byte_count))


def _check_coverage(coverage: torch.Tensor, end: int) -> None:
    problems = []
    if int(coverage[0]) != 0:
        problems.append("position 0 (the stream's first BOS, never a target) was scored")
    inside = coverage[1:end]
    missing = torch.nonzero(inside == 0).flatten()
    repeated = torch.nonzero(inside > 1).flatten()
    if missing.numel():
        problems.append(f"{missing.numel()} targets never scored (first at position {int(missing[0]) + 1})")
    if repeated.numel():
        problems.append(f"{repeated.numel()} targets scored more than once (first at position {int(repeated[0]) + 1})")
    beyond = torch.nonzero(coverage[end:]).flatten()
    if beyond.numel():
        problems.append(f"{beyond.numel()} positions at or past end={end} were scored")
    if problems:
        raise PgolfError("eval did not score every target exactly once: " + "; ".join(problems))
