"""The tilt (frontier-spec F1.2): the model's full distribution raised on the hinted token and
renormalised over the whole vocabulary (C2), applied to the score only.

    p'(a) = p(a) * exp(beta * [a = h]) / Z,   Z = 1 + q * (e^beta - 1),   q = p(h)
    -log p'(y) = -log p(y) - beta * [y = h] + log1p(q * expm1(beta))

Positions without a hint (h < 0) keep p. `tilted_nll` needs only the two values a scoring forward
already has (the target's NLL and log p(h)); `tilt_log_probs` is the full tilted distribution, the
reference it is tested against. Both run in float32 at least (float64 stays float64).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pgolf.errors import PgolfError


def _check(beta: float, hint: torch.Tensor) -> None:
    if not math.isfinite(beta) or beta < 0:
        raise PgolfError(f"ngram beta must be a finite number >= 0, got {beta!r}")
    if hint.dtype not in (torch.int32, torch.int64):
        raise PgolfError(f"ngram hints must be int32 or int64 token ids (-1: none), got {hint.dtype}")


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def hint_log_prob(log_probs: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """log p(h) per position from full log-probabilities [..., V] (0 where there is no hint)."""
    gathered = log_probs.gather(-1, hint.clamp_min(0).long().unsqueeze(-1)).squeeze(-1)
    return torch.where(hint >= 0, gathered, torch.zeros_like(gathered))


def tilt_log_probs(log_probs: torch.Tensor, hint: torch.Tensor, beta: float) -> torch.Tensor:
    """The tilted distribution's log-probabilities over the full vocabulary, [..., V]."""
    _check(beta, hint)
    lp = _wide(log_probs)
    boost = torch.zeros_like(lp).scatter_(-1, hint.clamp_min(0).long().unsqueeze(-1), beta)
    boost = boost * (hint >= 0).unsqueeze(-1)
    return torch.log_softmax(lp + boost, dim=-1)


@torch.no_grad()
def tilted_nll(nll: torch.Tensor, log_p_hint: torch.Tensor, hint: torch.Tensor, target: torch.Tensor,
               beta: float) -> torch.Tensor:
    """-log p'(target) per position: the score. Detached: the TTT step trains on the untilted `nll`."""
    _check(beta, hint)
    nll = _wide(nll)
    q = torch.exp(torch.clamp(_wide(log_p_hint), max=0.0))
    log_z = torch.log1p(q * math.expm1(beta))
    hit = (hint >= 0) & (hint.long() == target.long())
    tilted = nll - beta * hit.to(nll.dtype) + log_z
    return torch.where(hint >= 0, tilted, nll)


def gather_hints(token_hints: np.ndarray, positions: torch.Tensor | np.ndarray,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Hints (int64, -1: none) for the targets at these stream positions, on `device`."""
    pos = positions.cpu().numpy() if isinstance(positions, torch.Tensor) else np.asarray(positions)
    return torch.from_numpy(np.asarray(token_hints[pos], dtype=np.int64)).to(device)
