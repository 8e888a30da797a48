"""flash-linear-attention (fla) as an optional backend of the gated delta rule.

`fla_chunk_scan` takes and returns what `pgolf.ops.gdn.gdn_chunk_scan` does: q, k [B, T, H, K]
(already L2-normalised), v [B, T, H, V], g (log decay <= 0) and beta [B, T, H]; optional
initial state [S, H, K, V] and cu_seqlens [S + 1] (B = 1); returns (o in v's dtype, final
state [S, H, K, V] fp32). fla 0.6's `chunk_gated_delta_rule` shares these layouts, so the
adapter only fixes the dtypes and the flags that differ from its defaults.

fla runs on CUDA only and is not a dependency (`pip install '.[gpu]'`): `fla_available`
says why it cannot be used, and pgolf's own kernels stay the default everywhere.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from pgolf.errors import PgolfError
from pgolf.ops.gdn import gdn_chunk_scan

BACKENDS = ("pgolf", "fla", "auto")


@functools.cache
def _fla_kernel():
    """fla's chunked gated-delta-rule function, or the reason it cannot be imported."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except Exception as e:  # noqa: BLE001 (ImportError, or fla failing its own import-time checks)
        return None, f"flash-linear-attention (fla) is not importable: {type(e).__name__}: {e}"
    return chunk_gated_delta_rule, ""


def fla_available(device: torch.device | str | None = None) -> tuple[bool, str]:
    """(usable, reason it is not): fla must import, and it runs on CUDA tensors only."""
    kernel, reason = _fla_kernel()
    if kernel is None:
        return False, reason
    if device is not None and torch.device(device).type != "cuda":
        return False, f"fla runs on CUDA tensors only, not on {torch.device(device).type}"
    return True, ""


def fla_chunk_scan(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, initial_state: Tensor | None = None,
                   cu_seqlens: Tensor | None = None, scale: float | None = None,
                   chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """The gated delta rule through fla, with gdn_chunk_scan's conventions (see the module doc)."""
    ok, reason = fla_available(q.device)
    if not ok:
        raise PgolfError(f"fla_chunk_scan: {reason}")
    kernel, _ = _fla_kernel()
    o, final = kernel(q, k, v, g.float(), beta.to(q.dtype), scale=q.shape[-1] ** -0.5 if scale is None else scale,
                      initial_state=initial_state, output_final_state=True,
                      cu_seqlens=None if cu_seqlens is None else cu_seqlens.long(), chunk_size=chunk_size)
    return o.to(v.dtype), final.float()


def gdn_scan(backend: str):
    """The scan function a GDN layer uses: "pgolf" (its own kernels), "fla", or "auto" (fla when it
    imports, else pgolf; on a CPU tensor "auto" always runs pgolf's)."""
    if backend not in BACKENDS:
        raise PgolfError(f"model.gdn_backend={backend!r} must be one of {list(BACKENDS)}")
    if backend == "pgolf":
        return gdn_chunk_scan
    if backend == "fla":
        ok, reason = fla_available()
        if not ok:
            raise PgolfError(f"model.gdn_backend=fla: {reason} (pip install '.[gpu]', or use gdn_backend=pgolf)")
        return fla_chunk_scan
    return _auto_scan


def _auto_scan(q, k, v, g, beta, initial_state=None, cu_seqlens=None, scale=None, chunk_size=64):
    use_fla = fla_available(q.device)[0] and chunk_size in (16, 32, 64)
    return (fla_chunk_scan if use_fla else gdn_chunk_scan)(q, k, v, g, beta, initial_state=initial_state,
                                                           cu_seqlens=cu_seqlens, scale=scale, chunk_size=chunk_size)
