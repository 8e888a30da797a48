"""Logit calibration (PR #1924 / #1884, challenge-spec §5.13): a static affine map of the logits,
    logits' = τ·logits + b,  b[v] = Σ_k F[v, k]·w[k],
F the fixed per-token features of the tokenizer (pgolf.metric.token_features: 14 bits per
token), τ and w fitted after quantization on training tokens (pgolf.train.logit_calibration),
then frozen. It acts on every logit before the full softmax, so the probabilities still sum
to 1 over the whole vocabulary (C2).

The model carries it at its `calibration` hook (an identity until `attach_calibration`), so
every path that scores through `GPT.logits` or the eager `GPT.forward` (the evaluator, TTT
scoring) applies it. Its tensors are state-dict entries under `calibration.`: the artifact
stores them (τ and w fp32 by their control role, the features as int16 bit codes) and counts
their bytes; `calibration_from_state` rebuilds the module from a loaded state dict.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.roles import CONTROL, declare

PREFIX = "calibration."


class LogitCalibration(nn.Module):
    """τ (init 1) and w (init 0, one per feature): the identity until fitted. `codes` (int16 [V]):
    bit k of codes[v] is F[v, k]."""

    def __init__(self, codes: Tensor, num_features: int):
        super().__init__()
        if codes.ndim != 1 or codes.dtype != torch.int16 or not 0 < num_features <= 15:
            raise ValueError(f"feature codes must be int16 [V] with 1..15 features, got {codes.dtype} "
                             f"{tuple(codes.shape)} and {num_features}")
        self.tau = nn.Parameter(torch.ones((), dtype=torch.float32))
        self.weight = nn.Parameter(torch.zeros(num_features, dtype=torch.float32))
        self.register_buffer("codes", codes.clone())
        declare(self, tau=CONTROL, weight=CONTROL)

    def features(self) -> Tensor:
        """F as floats [V, K]."""
        bits = torch.arange(self.weight.numel(), device=self.codes.device, dtype=torch.int32)
        return ((self.codes.to(torch.int32)[:, None] >> bits) & 1).to(self.weight.dtype)

    def bias(self) -> Tensor:
        """b = F·w [V]."""
        return self.features() @ self.weight

    def forward(self, logits: Tensor) -> Tensor:
        if logits.size(-1) != self.codes.numel():
            raise ValueError(f"logits over {logits.size(-1)} tokens, calibration over {self.codes.numel()}")
        return self.tau.to(logits.dtype) * logits + self.bias().to(logits.dtype)


def attach_calibration(model: nn.Module, calibration: LogitCalibration) -> None:
    """Put `calibration` on the model's logits (its `calibration` hook), frozen."""
    calibration.requires_grad_(False)
    model.calibration = calibration


def calibration_from_state(state: dict[str, Tensor]) -> LogitCalibration | None:
    """A LogitCalibration shaped as the `calibration.*` entries of `state` say (None: there are
    none), to attach before loading `state` into the model."""
    keys = {k for k in state if k.startswith(PREFIX)}
    if not keys:
        return None
    want = {PREFIX + n for n in ("tau", "weight", "codes")}
    if keys != want:
        raise ValueError(f"calibration entries {sorted(keys)} are not {sorted(want)}")
    return LogitCalibration(state[PREFIX + "codes"], state[PREFIX + "weight"].numel())
