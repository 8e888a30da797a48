"""The n-gram tilt (pgolf.ngram.tilt): C2 over the full vocabulary, the closed-form score equal to the
renormalised distribution's, beta respected, the score detached from training, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgolf.errors import PgolfError
from pgolf.ngram import NgramSettings
from pgolf.ngram.tilt import gather_hints, hint_log_prob, tilt_log_probs, tilted_nll


def _case(seed: int, n: int = 64, vocab: int = 8192, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g, dtype=dtype) * 3
    log_probs = torch.log_softmax(logits, dim=-1)
    target = torch.randint(0, vocab, (n,), generator=g)
    hint = torch.randint(0, vocab, (n,), generator=g)
    hint[::3] = -1  # ungated
    hint[1::4] = target[1::4]  # hits
    return log_probs, target, hint


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5), (torch.bfloat16, 2e-5)])
def test_c2_the_tilted_distribution_sums_to_one(dtype, tol):
    log_probs, _, hint = _case(0, dtype=dtype)
    tilted = tilt_log_probs(log_probs, hint, NgramSettings().beta)
    assert tilted.shape == log_probs.shape
    sums = tilted.double().exp().sum(-1)
    # bf16 inputs are widened first: their own rounding does not count against the renormalisation
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=tol)


def test_the_tilt_raises_only_the_hint_and_keeps_ungated_positions():
    log_probs, _, hint = _case(1)
    beta = 2.625
    tilted = tilt_log_probs(log_probs, hint, beta)
    gated = hint >= 0
    torch.testing.assert_close(tilted[~gated], log_probs[~gated])
    diff = tilted[gated] - log_probs[gated]  # = beta on the hint, 0 elsewhere, minus log Z everywhere
    rows = torch.arange(int(gated.sum()))
    h = hint[gated]
    q = log_probs[gated].gather(-1, h.unsqueeze(-1)).squeeze(-1).exp()
    log_z = torch.log1p(q * math.expm1(beta))
    torch.testing.assert_close(diff[rows, h], beta - log_z)
    others = diff.clone()
    others[rows, h] = float("nan")
    torch.testing.assert_close(others.nanmean(-1), -log_z)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.625, 6.0])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_score_equals_the_renormalised_distributions_and_follows_beta(beta, dtype, tol):
    log_probs, target, hint = _case(2, dtype=dtype)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    score = tilted_nll(nll, hint_log_prob(log_probs, hint), hint, target, beta)
    truth = -tilt_log_probs(log_probs.double(), hint, beta).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(score.double(), truth, rtol=0, atol=tol)
    ungated = hint < 0
    torch.testing.assert_close(score[ungated], nll[ungated].to(score.dtype))
    if beta == 0.0:
        torch.testing.assert_close(score, nll.to(score.dtype))
    else:  # a hit gains, a miss loses (by log Z, below float32's resolution where q is tiny)
        hit, miss = (hint >= 0) & (hint == target), (hint >= 0) & (hint != target)
        assert (score[hit] < nll[hit]).all()
        assert (score[miss] > nll[miss]).all() if dtype == torch.float64 else (score[miss] >= nll[miss]).all()


def test_the_tilt_is_applied_to_the_score_only():
    log_probs, target, hint = _case(3, dtype=torch.float32)
    logits = log_probs.clone().requires_grad_(True)
    lp = torch.log_softmax(logits, -1)
    nll = -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    score = tilted_nll(nll, hint_log_prob(lp, hint), hint, target, 2.625)
    assert not score.requires_grad  # nothing from the tilt can reach a TTT step
    assert nll.requires_grad  # the untilted loss the step trains on is untouched


def test_a_certain_model_gains_nothing_on_a_hit_and_a_miss_costs_beta():
    vocab = 16
    log_probs = torch.full((2, vocab), -1e4, dtype=torch.float64)
    log_probs[:, 3] = 0.0
    hint = torch.tensor([3, 3])
    target = torch.tensor([3, 5])
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    score = tilted_nll(nll, hint_log_prob(log_probs, hint), hint, target, 2.625)
    torch.testing.assert_close(score, nll + torch.tensor([0.0, 2.625], dtype=torch.float64))  # Z = e^beta


def test_gather_hints_aligns_with_stream_positions():
    token_hints = np.array([-1, 4, -1, 7, 2], dtype=np.int32)
    got = gather_hints(token_hints, torch.tensor([[1, 2], [3, 4]]))
    assert got.dtype == torch.int64 and got.tolist() == [[4, -1], [7, 2]]


@pytest.mark.parametrize("beta, hint_dtype, match", [
    (-1.0, torch.int64, "beta"), (float("inf"), torch.int64, "beta"), (2.0, torch.float32, "int32 or int64"),
])
def test_bad_tilt_input_is_a_clear_error(beta, hint_dtype, match):
    log_probs, target, hint = _case(4, n=4, vocab=8)
    with pytest.raises(PgolfError, match=match):
        tilt_log_probs(log_probs, hint.to(hint_dtype), beta)
    with pytest.raises(PgolfError, match=match):
        tilted_nll(-log_probs[:, 0], log_probs[:, 0], hint.to(hint_dtype), target, beta)


def test_compiled_equals_eager():
    # aot_eager: the whole score traces as one graph (fullgraph) without inductor's slow CPU codegen
    log_probs, target, hint = _case(5, n=37, vocab=64, dtype=torch.float32)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    args = (nll, hint_log_prob(log_probs, hint), hint, target, 2.625)
    compiled = torch.compile(tilted_nll, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), tilted_nll(*args), rtol=0, atol=0)
