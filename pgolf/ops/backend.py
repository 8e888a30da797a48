"""Where an op's Triton kernel can run, and loading it.

Triton runs on CUDA tensors, and on CPU tensors when TRITON_INTERPRET=1 was set before
the kernel module was imported (the CPU test tier). Everywhere else an op runs its torch
implementation, so pgolf works on any machine.
"""
from __future__ import annotations

import functools
import importlib
import os

import torch


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_triton(t: torch.Tensor) -> bool:
    if not _triton_importable():
        return False
    return t.is_cuda or (interpreting() and t.device.type == "cpu")


@functools.cache
def kernel_module(name: str):
    """pgolf_kernels.<name>, imported on first use (after TRITON_INTERPRET is settled)."""
    return importlib.import_module(f"pgolf_kernels.{name}")
