"""Softcapped cross-entropy, forward + backward: pgolf's ops against the baselines.

Logits form ([N, V] bf16 logits):
  (a) eager softcap + F.cross_entropy in fp32     (b) torch.compile of (a)
  (c) Liger-Kernel's cross-entropy with its softcap (if `liger_kernel` is installed)
  pgolf::softcapped_ce
Fused form (hidden [N, D] and the tied head [V, D]):
  (d) matmul + (a)                                 pgolf::linear_softcapped_ce
Reported: median ms, GB/s of the minimum traffic (logits read in forward, read and
gradient written in backward: 3 x N x V x 2 bytes) against the copy bandwidth measured in
the same run, and peak memory for the fused form.

    python benchmarks/bench_ce.py                    # GPU: the issue's shapes
    python benchmarks/bench_ce.py --device cpu --small   # checks the script itself
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from harness import kernel_bench_args, median_seconds, sync
from pgolf.ops.softcapped_ce import linear_softcapped_cross_entropy, softcapped_cross_entropy

SOFTCAP = 30.0


def eager_ce(logits, targets):
    z = SOFTCAP * torch.tanh(logits.float() / SOFTCAP)
    return F.cross_entropy(z, targets)


def fwd_bwd(fn, *leaves):
    def run():
        loss = fn(*leaves)
        loss.backward()
        for t in leaves:
            t.grad = None
    return run


def copy_bandwidth(nbytes: int, device) -> float:
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src))
    return 2 * nbytes / t / 1e9  # read + write


def peak_mib(fn, device) -> float:
    if device.type != "cuda":
        return float("nan")
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def liger_ce():
    try:
        from liger_kernel.transformers.functional import liger_cross_entropy
    except ImportError:
        return None
    return lambda logits, targets: liger_cross_entropy(logits, targets, softcap=SOFTCAP)


def main() -> None:
    args, dev = kernel_bench_args()
    shapes = [(512, 1024), (512, 8192)] if args.small else [(n, v) for n in (65_536, 98_304) for v in (1024, 8192)]
    d = 64 if args.small else 512
    dtype = torch.bfloat16
    gbps_copy = copy_bandwidth(shapes[-1][0] * shapes[-1][1] * 2, dev)
    print(f"copy bandwidth (read + write): {gbps_copy:.0f} GB/s\n")
    liger = liger_ce()
    compiled = torch.compile(eager_ce)

    print("| form | N | V | provider | ms | GB/s | % of copy | speed-up vs (a) | peak MiB |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for n, v in shapes:
        g = torch.Generator(device=dev).manual_seed(0)
        logits = (torch.randn(n, v, device=dev, generator=g) * 8).to(dtype).requires_grad_()
        targets = torch.randint(0, v, (n,), device=dev, generator=g)
        traffic = 3 * n * v * 2
        providers = {"(a) eager fp32": eager_ce, "(b) torch.compile": compiled,
                     "pgolf softcapped_ce": lambda x, t: softcapped_cross_entropy(x, t, softcap=SOFTCAP)}
        if liger is not None:
            providers["(c) Liger"] = liger
        base = None
        for name, fn in providers.items():
            t = median_seconds(fwd_bwd(lambda x: fn(x, targets), logits))
            base = base or t
            gbps = traffic / t / 1e9
            print(f"| logits | {n} | {v} | {name} | {t * 1e3:.3f} | {gbps:.0f} | {gbps / gbps_copy:.0%} | "
                  f"{base / t:.2f}x | |")
        if liger is None:
            print(f"| logits | {n} | {v} | (c) Liger | not installed | | | | |")

        hidden = torch.randn(n, d, device=dev, generator=g).to(dtype).requires_grad_()
        weight = (torch.randn(v, d, device=dev, generator=g) * 0.05).to(dtype).requires_grad_()
        fused_providers = {
            "(d) matmul + eager": lambda h, w: eager_ce(h @ w.T, targets),
            "pgolf linear_softcapped_ce": lambda h, w: linear_softcapped_cross_entropy(h, w, targets, softcap=SOFTCAP),
        }
        base = None
        for name, fn in fused_providers.items():
            run = fwd_bwd(fn, hidden, weight)
            t = median_seconds(run)
            base = base or t
            print(f"| fused | {n} | {v} | {name} | {t * 1e3:.3f} | | | {base / t:.2f}x | {peak_mib(run, dev):.0f} |")


if __name__ == "__main__":
    main()
