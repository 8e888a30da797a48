"""Fitting logit calibration (challenge-spec §5.13; the module: pgolf.model.logit_calibration).

After quantization, on the model the artifact will hold (its dequantized weights, recurrence
on, as eval runs it), before the artifact is written:

1. the first `logit_calib_tokens` (+1) tokens of the training stream, cut into eval-length
   windows with stride `logit_calib_stride` (pgolf.eval.windows: each token is a target once,
   with at least seq_len − stride tokens of context, as the sliding eval scores it)
2. `logit_calib_batch_seqs` windows per forward: the frozen model's capped logits at the
   scored positions, then one Adam step (lr `logit_calib_lr`) on τ and w for the mean CE of
   τ·logits + F·w plus `logit_calib_l2`·(|w|² + (τ − 1)²) (pulled towards the identity map),
   for `logit_calib_epochs` passes
3. the fitted module, frozen, joins the artifact (`calibration.*` tensors: counted bytes)

It reads training data, so the trainer runs it on the training clock (export.reserve_seconds
covers the Hessians and this).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.config import Config, ExportConfig
from pgolf.data import shards
from pgolf.data.tokenizer import load_tokenizer
from pgolf.eval.evaluator import autocast_for
from pgolf.eval.scoring import model_from_decoded
from pgolf.eval.windows import plan_windows
from pgolf.export.artifact import Artifact
from pgolf.metric.token_features import NUM_FEATURES, token_feature_codes
from pgolf.model import GPT, param_roles
from pgolf.model.logit_calibration import PREFIX, LogitCalibration
from pgolf.quant.recipe import quantize_state
from pgolf.train.loader import TokenStream


@dataclass(frozen=True)
class CalibrationFit:
    calibration: LogitCalibration
    tokens: int  # targets fitted on
    steps: int  # Adam steps
    nll_first: float  # mean CE (nats) of the uncalibrated model over the first pass
    nll_last: float  # mean CE of the calibrated logits over the last pass, before each step


def first_train_tokens(data_dir, n: int, vocab_size: int) -> Tensor:
    """The first n + 1 tokens of the training stream (n targets), int64."""
    stream = TokenStream(shards.require_token_shards(data_dir, "train"), vocab_size)
    total = sum(stream.sizes)
    return torch.from_numpy(stream.take(min(n + 1, total)).astype(np.int64))


def _scored_batches(model: GPT, tokens: Tensor, seq_len: int, stride: int, batch_seqs: int):
    """(logits [n, V] fp32, targets [n]) of the scored positions, batch_seqs windows at a time."""
    plan = plan_windows(len(tokens), seq_len, stride)
    device = next(model.parameters()).device
    offsets = torch.arange(plan.seq_len)
    for lo in range(0, len(plan), batch_seqs):
        idx = plan.starts[lo:lo + batch_seqs, None] + offsets
        keep = (idx + 1 >= plan.first_scored[lo:lo + batch_seqs, None]).to(device)
        x, y = tokens[idx].to(device), tokens[idx + 1].to(device)
        with torch.no_grad(), autocast_for(device):
            hidden = model.hidden(x)
            logits = model.logits(hidden[keep]).float()
        yield logits, y[keep]


def fit_logit_calibration(model: GPT, tokens: Tensor, codes: Tensor, cfg: ExportConfig, seq_len: int) -> CalibrationFit:
    """Fit τ and w on `tokens` through the frozen `model` (which must carry no calibration yet)."""
    device = next(model.parameters()).device
    calib = LogitCalibration(codes, NUM_FEATURES).to(device)
    opt = torch.optim.Adam(calib.parameters(), lr=cfg.logit_calib_lr)
    was_training = model.training
    model.eval()
    steps, first, last = 0, [0.0, 0], [0.0, 0]
    try:
        for epoch in range(cfg.logit_calib_epochs):
            last = [0.0, 0]
            for logits, y in _scored_batches(model, tokens, seq_len, cfg.logit_calib_stride,
                                             cfg.logit_calib_batch_seqs):
                if epoch == 0:
                    first[0] += float(F.cross_entropy(logits, y, reduction="sum"))
                    first[1] += y.numel()
                ce = F.cross_entropy(calib(logits), y)
                penalty = calib.weight.square().sum() + (calib.tau - 1).square()
                opt.zero_grad(set_to_none=True)
                (ce + cfg.logit_calib_l2 * penalty).backward()
                opt.step()
                steps += 1
                last[0] += float(ce.detach()) * y.numel()
                last[1] += y.numel()
    finally:
        model.train(was_training)
    calib.requires_grad_(False)
    if not (torch.isfinite(calib.tau) and torch.isfinite(calib.weight).all()):
        raise ValueError(f"logit calibration diverged (tau {float(calib.tau)}): lower export.logit_calib_lr")
    return CalibrationFit(calib, first[1], steps, first[0] / max(first[1], 1), last[0] / max(last[1], 1))


def calibrate_artifact(art: Artifact, cfg: Config, device: torch.device) -> CalibrationFit:
    """Fit logit calibration on the model `art` holds and add its tensors (and roles) to `art`."""
    model = model_from_decoded(art, device, "the quantized model")
    tok = load_tokenizer(cfg.data.tokenizer)
    codes = torch.from_numpy(token_feature_codes(tok.sp, cfg.model.vocab_size))
    tokens = first_train_tokens(cfg.data.path, cfg.export.logit_calib_tokens, cfg.model.vocab_size)
    fit = fit_logit_calibration(model, tokens, codes, cfg.export, cfg.eval.seq_len or cfg.train.seq_len)
    state = {PREFIX + k: v.detach().cpu() for k, v in fit.calibration.state_dict().items()}
    roles = {PREFIX + k: r for k, r in param_roles(fit.calibration).items()}
    art.tensors.update(quantize_state(state, cfg.export, roles))
    if art.roles is not None:
        art.roles.update(roles)
    return fit


def fit_summary(fit: CalibrationFit) -> dict:
    """The numbers a log line reports."""
    bias = fit.calibration.bias()
    return {"tokens": fit.tokens, "steps": fit.steps, "tau": round(float(fit.calibration.tau), 6),
            "nll_first": round(fit.nll_first, 6), "nll_last": round(fit.nll_last, 6),
            "bias_min": round(float(bias.min()), 6), "bias_max": round(float(bias.max()), 6)}
