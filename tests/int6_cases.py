"""Shared int6 matmul problems for the torch-path tests and the interpreter tier."""
import torch

from pgolf.ops.int6_matmul import pack_int6


def problem(m, n=37, k=53, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-31, 32, (n, k), generator=g, dtype=torch.int8)
    scales = torch.rand(n, generator=g) * 0.05 + 0.01
    x = torch.randn(m, k, generator=g).to(dtype)
    return x, codes, pack_int6(codes), scales


def exact(x, codes, scales):
    return x.double() @ (codes.double() * scales.double()[:, None]).T
