"""Softcapped cross-entropy as torch.library ops: `pgolf::softcapped_ce` on logits, and
`pgolf::linear_softcapped_ce` on hidden states and the (tied) head weight.

    loss_t = LSE(c·tanh(z/c)) − c·tanh(z_target/c),   z = logits (or hidden @ weightᵀ)
    mean:  Σ w_t·loss_t / Σ w_t   (w_t = 1 without weights; rows with target == ignore_index have w_t = 0)
    sum:   Σ w_t·loss_t           none: w_t·loss_t

The forward saves the per-row LSE (fp32) so the backward never needs fp32 logits. The
fused form walks the rows in chunks: each chunk's logits exist only as one bf16 GEMM
output, which the kernel overwrites with its gradient; the full [N, V] logits never exist.
When the loss is reduced (the training case) the fused forward also computes dhidden and
dweight, and the backward only scales them by the incoming gradient.

Each row primitive has a Triton kernel (pgolf_kernels.softcapped_ce) and a torch version
used on CPU; `pgolf.ops.reference.reference_softcapped_ce` (autograd, any dtype, fp64 in tests) is
the truth both are tested against.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from pgolf.ops.backend import kernel_module, use_triton

REDUCTIONS = ("mean", "sum", "none")
DEFAULT_CHUNK_ROWS = 8192  # 8192 x V=8192 bf16 logits = 128 MiB live at a time


# ---------------------------------------------------------------------------------------
# Row primitives: Triton where it runs, torch elsewhere. Accumulation is fp32, or fp64 for
# fp64 inputs (which take the torch path: they exist for gradcheck).


def _acc(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _kernel(x: Tensor) -> bool:
    return x.dtype != torch.float64 and use_triton(x)


def _rows_forward_torch(x: Tensor, targets: Tensor, softcap: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    z = softcap * torch.tanh(x.to(_acc(x)) / softcap)
    lse = torch.logsumexp(z, dim=1)
    valid = targets != ignore_index
    z_t = z.gather(1, torch.where(valid, targets, 0)[:, None])[:, 0]
    return torch.where(valid, lse - z_t, 0.0), lse


def _rows_backward_torch(x, targets, lse, row_grad, softcap: float, ignore_index: int, out: Tensor) -> Tensor:
    t = torch.tanh(x.to(_acc(x)) / softcap)
    d = torch.exp(softcap * t - lse[:, None])
    valid = targets != ignore_index
    rows = torch.arange(x.shape[0], device=x.device)
    d[rows, torch.where(valid, targets, 0)] -= valid.to(d.dtype)
    g = torch.where(valid, row_grad.to(d.dtype), 0.0)
    out.copy_(g[:, None] * d * (1.0 - t * t))
    return out


def _rows_forward(x, targets, softcap, ignore_index):
    if _kernel(x):
        return kernel_module("softcapped_ce").rows_forward(x, targets, softcap, ignore_index)
    return _rows_forward_torch(x, targets, softcap, ignore_index)


def _rows_backward(x, targets, lse, row_grad, softcap, ignore_index, out):
    if _kernel(x):
        return kernel_module("softcapped_ce").rows_backward(x, targets, lse, row_grad, softcap, ignore_index, out)
    return _rows_backward_torch(x, targets, lse, row_grad, softcap, ignore_index, out)


def _rows_forward_backward_(x, targets, row_grad, softcap, ignore_index):
    if _kernel(x):
        return kernel_module("softcapped_ce").rows_forward_backward_(x, targets, row_grad, softcap, ignore_index)
    loss, lse = _rows_forward_torch(x, targets, softcap, ignore_index)
    _rows_backward_torch(x, targets, lse, row_grad, softcap, ignore_index, out=x)
    return loss, lse


# ---------------------------------------------------------------------------------------
# Weights and reductions (tiny [N] vectors, plain torch)


def _row_weights(targets: Tensor, weights: Tensor | None, ignore_index: int, dtype: torch.dtype) -> Tensor:
    valid = targets != ignore_index
    return valid.to(dtype) if weights is None else weights.to(dtype) * valid


def _reduce(rows: Tensor, w: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return rows * w
    total = (rows * w).sum()
    return total if reduction == "sum" else total / w.sum()


def _row_grad(grad: Tensor, w: Tensor, reduction: str) -> Tensor:
    """d loss / d row_loss_t, times the upstream gradient."""
    grad = grad.to(w.dtype)
    if reduction == "none":
        return grad * w
    return (grad if reduction == "sum" else grad / w.sum()) * w


# ---------------------------------------------------------------------------------------
# pgolf::softcapped_ce


@torch.library.custom_op("pgolf::softcapped_ce", mutates_args=())
def softcapped_ce_op(logits: Tensor, targets: Tensor, weights: Optional[Tensor], softcap: float, ignore_index: int,
                     reduction: str) -> tuple[Tensor, Tensor]:
    rows, lse = _rows_forward(logits.contiguous(), targets.contiguous(), softcap, ignore_index)
    return _reduce(rows, _row_weights(targets, weights, ignore_index, rows.dtype), reduction), lse


@softcapped_ce_op.register_fake
def _(logits, targets, weights, softcap, ignore_index, reduction):
    n, acc = logits.shape[0], _acc(logits)
    return logits.new_empty((n,) if reduction == "none" else (), dtype=acc), logits.new_empty((n,), dtype=acc)


@torch.library.custom_op("pgolf::softcapped_ce_backward", mutates_args=())
def softcapped_ce_backward_op(logits: Tensor, targets: Tensor, lse: Tensor, row_grad: Tensor, softcap: float,
                              ignore_index: int) -> Tensor:
    x = logits.contiguous()
    return _rows_backward(x, targets.contiguous(), lse, row_grad, softcap, ignore_index, torch.empty_like(x))


@softcapped_ce_backward_op.register_fake
def _(logits, targets, lse, row_grad, softcap, ignore_index):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _ce_setup(ctx, inputs, output):
    logits, targets, weights, softcap, ignore_index, reduction = inputs
    ctx.save_for_backward(logits, targets, output[1], weights)
    ctx.softcap, ctx.ignore_index, ctx.reduction = softcap, ignore_index, reduction
    ctx.mark_non_differentiable(output[1])


def _ce_backward(ctx, grad_loss, _grad_lse):
    logits, targets, lse, weights = ctx.saved_tensors
    row_grad = _row_grad(grad_loss, _row_weights(targets, weights, ctx.ignore_index, lse.dtype), ctx.reduction)
    dlogits = softcapped_ce_backward_op(logits, targets, lse, row_grad, ctx.softcap, ctx.ignore_index)
    return dlogits, None, None, None, None, None


softcapped_ce_op.register_autograd(_ce_backward, setup_context=_ce_setup)


# ---------------------------------------------------------------------------------------
# pgolf::linear_softcapped_ce (the fused LM head)


def _chunks(n: int, chunk_rows: int):
    for lo in range(0, n, chunk_rows):
        yield lo, min(lo + chunk_rows, n)


@torch.library.custom_op("pgolf::linear_softcapped_ce", mutates_args=())
def linear_softcapped_ce_op(hidden: Tensor, weight: Tensor, targets: Tensor, weights: Optional[Tensor], softcap: float,
                            ignore_index: int, reduction: str, chunk_rows: int,
                            grads_in_forward: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, lse, dhidden, dweight); the last two are empty unless grads_in_forward."""
    n, acc = hidden.shape[0], _acc(hidden)
    targets = targets.contiguous()
    w = _row_weights(targets, weights, ignore_index, acc)
    rows = torch.empty(n, device=hidden.device, dtype=acc)
    lse = torch.empty_like(rows)
    if grads_in_forward:
        row_grad = _row_grad(torch.ones((), device=hidden.device), w, reduction)
        dhidden = torch.empty_like(hidden)
        dweight = torch.zeros(weight.shape, device=weight.device, dtype=acc)
    for lo, hi in _chunks(n, chunk_rows):
        h = hidden[lo:hi]
        logits = h @ weight.T  # the only logits that ever exist: one chunk
        if grads_in_forward:
            rows[lo:hi], lse[lo:hi] = _rows_forward_backward_(logits, targets[lo:hi], row_grad[lo:hi], softcap,
                                                               ignore_index)
            torch.mm(logits, weight, out=dhidden[lo:hi])  # logits now holds dlogits
            dweight += (logits.T @ h).to(acc)
        else:
            rows[lo:hi], lse[lo:hi] = _rows_forward(logits, targets[lo:hi], softcap, ignore_index)
    if not grads_in_forward:
        dhidden, dweight = hidden.new_empty(0), weight.new_empty(0, dtype=acc)
    return _reduce(rows, w, reduction), lse, dhidden, dweight


@linear_softcapped_ce_op.register_fake
def _(hidden, weight, targets, weights, softcap, ignore_index, reduction, chunk_rows, grads_in_forward):
    n, acc = hidden.shape[0], _acc(hidden)
    loss = hidden.new_empty((n,) if reduction == "none" else (), dtype=acc)
    lse = hidden.new_empty((n,), dtype=acc)
    if grads_in_forward:
        return loss, lse, torch.empty_like(hidden), weight.new_empty(weight.shape, dtype=acc)
    return loss, lse, hidden.new_empty(0), weight.new_empty(0, dtype=acc)


@torch.library.custom_op("pgolf::linear_softcapped_ce_backward", mutates_args=())
def linear_softcapped_ce_backward_op(hidden: Tensor, weight: Tensor, targets: Tensor, lse: Tensor, row_grad: Tensor,
                                     softcap: float, ignore_index: int, chunk_rows: int) -> tuple[Tensor, Tensor]:
    """Recompute each chunk's logits and backpropagate per-row gradients (reduction "none")."""
    dhidden = torch.empty_like(hidden)
    dweight = torch.zeros(weight.shape, device=weight.device, dtype=_acc(hidden))
    targets = targets.contiguous()
    for lo, hi in _chunks(hidden.shape[0], chunk_rows):
        h = hidden[lo:hi]
        logits = h @ weight.T
        _rows_backward(logits, targets[lo:hi], lse[lo:hi], row_grad[lo:hi], softcap, ignore_index, out=logits)
        torch.mm(logits, weight, out=dhidden[lo:hi])
        dweight += (logits.T @ h).to(dweight.dtype)
    return dhidden, dweight.to(weight.dtype)


@linear_softcapped_ce_backward_op.register_fake
def _(hidden, weight, targets, lse, row_grad, softcap, ignore_index, chunk_rows):
    return torch.empty_like(hidden), torch.empty_like(weight)


def _linear_setup(ctx, inputs, output):
    hidden, weight, targets, weights, softcap, ignore_index, reduction, chunk_rows, grads_in_forward = inputs
    _, lse, dhidden, dweight = output
    ctx.mark_non_differentiable(lse, dhidden, dweight)
    ctx.grads_in_forward = grads_in_forward
    ctx.args = (softcap, ignore_index, reduction, chunk_rows)
    ctx.weight_dtype = weight.dtype
    if grads_in_forward:
        ctx.save_for_backward(dhidden, dweight)
    else:
        ctx.save_for_backward(hidden, weight, targets, weights, lse)


def _linear_backward(ctx, grad_loss, _lse, _dh, _dw):
    softcap, ignore_index, reduction, chunk_rows = ctx.args
    if ctx.grads_in_forward:
        dhidden, dweight = ctx.saved_tensors
        return (dhidden * grad_loss.to(dhidden.dtype), (dweight * grad_loss).to(ctx.weight_dtype),
                None, None, None, None, None, None, None)
    hidden, weight, targets, weights, lse = ctx.saved_tensors
    row_grad = _row_grad(grad_loss, _row_weights(targets, weights, ignore_index, lse.dtype), reduction)
    dhidden, dweight = linear_softcapped_ce_backward_op(hidden, weight, targets, lse, row_grad, softcap,
                                                        ignore_index, chunk_rows)
    return dhidden, dweight, None, None, None, None, None, None, None


linear_softcapped_ce_op.register_autograd(_linear_backward, setup_context=_linear_setup)


# ---------------------------------------------------------------------------------------
# Public functions


def _validate(n: int, targets: Tensor, weights: Tensor | None, softcap: float, reduction: str) -> None:
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be int64 or int32, got {targets.dtype}")
    if weights is not None and weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(weights.shape)}")
    if not softcap > 0:
        raise ValueError(f"softcap must be positive, got {softcap}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def softcapped_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor | None = None, softcap: float = 30.0,
                             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """CE of softcap(logits) [N, V] (bf16/fp16/fp32) against targets [N]."""
    if logits.ndim != 2 or logits.dtype not in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        raise ValueError(f"logits must be a 2-D float tensor, got {tuple(logits.shape)} {logits.dtype}")
    _validate(logits.shape[0], targets, weights, softcap, reduction)
    loss, _ = softcapped_ce_op(logits, targets.long(), weights, float(softcap), int(ignore_index), reduction)
    return loss


def linear_softcapped_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, weights: Tensor | None = None,
                                    softcap: float = 30.0, ignore_index: int = -100, reduction: str = "mean",
                                    chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """CE of softcap(hidden [N, D] @ weight [V, D]ᵀ) without materialising the [N, V] logits."""
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, D] and weight [V, D] do not fit: {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    _validate(hidden.shape[0], targets, weights, softcap, reduction)
    weight = weight.to(hidden.dtype)
    grads_in_forward = (reduction != "none" and torch.is_grad_enabled()
                        and (hidden.requires_grad or weight.requires_grad))
    loss, _, _, _ = linear_softcapped_ce_op(hidden.contiguous(), weight.contiguous(), targets.long(), weights,
                                            float(softcap), int(ignore_index), reduction, int(chunk_rows), grads_in_forward)
    return loss
