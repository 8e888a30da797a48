"""Newton-Schulz on the record's parameter banks (5 Polar Express steps), and the whole
optimizer step of the record-sized model on one GPU.

Providers for each bank, timed in the same run:
  eager   the same iteration in torch bf16 (baddbmm)      compiled  torch.compile of eager
  pgolf   pgolf::newton_schulz (Triton symmetric Gram kernels + cuBLAS baddbmm)
TFLOP/s count the nominal GEMM work, 4m²n + 2m³ per matrix and step (m <= n), against a
bf16 matmul peak measured in the same run.

    python benchmarks/bench_ns.py                  # GPU
    python benchmarks/bench_ns.py --device cpu --small
"""
from __future__ import annotations


import torch

from harness import kernel_bench_args, median_seconds
from pgolf.ops.newton_schulz import _iterate_torch, coefficient_schedule, newton_schulz
from pgolf.optim.muon import Muon

RECORD_BANKS = [(22, 512, 512), (22, 256, 512), (11, 2048, 512), (11, 512, 2048)]
STEPS = 5


def eager(x: torch.Tensor, flat: list[float]) -> torch.Tensor:
    tall = x.shape[-2] > x.shape[-1]
    y = x.mT if tall else x
    y = (y / (torch.linalg.matrix_norm(y.float(), keepdim=True) + 1e-7)).bfloat16()
    y = _iterate_torch(y, flat)
    return y.mT if tall else y


def matmul_peak(device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    t = median_seconds(lambda: a @ a)
    return 2 * 8192 ** 3 / t / 1e12


def main() -> None:
    args, dev = kernel_bench_args()
    banks = [(b, m // 8, n // 8) for b, m, n in RECORD_BANKS] if args.small else RECORD_BANKS
    peak = matmul_peak(dev) if not args.small else float("nan")
    print(f"bf16 matmul peak (8192³): {peak:.0f} TFLOP/s\n")
    flat = [v for abc in coefficient_schedule("polar_express", STEPS) for v in abc]
    compiled = torch.compile(eager, dynamic=False)
    print("| bank | provider | ms | TFLOP/s | % of peak | speed-up vs eager |")
    print("|---|---|---:|---:|---:|---:|")
    for b, m, n in banks:
        x = torch.randn(b, m, n, device=dev, dtype=torch.bfloat16)
        small, big = min(m, n), max(m, n)
        flops = b * STEPS * (4 * small ** 2 * big + 2 * small ** 3)
        base = None
        for name, fn in (("eager", lambda: eager(x, flat)), ("compiled", lambda: compiled(x, flat)),
                         ("pgolf", lambda: newton_schulz(x, STEPS, "polar_express"))):
            t = median_seconds(fn)
            base = base or t
            tflops = flops / t / 1e12
            print(f"| {b}x{m}x{n} | {name} | {t * 1e3:.3f} | {tflops:.1f} | {tflops / peak:.0%} | {base / t:.2f}x |")

    # The whole Muon step for the record's four banks plus Adam on an 8192x512 embedding and the scalars.
    params = [torch.nn.Parameter(torch.randn(b, m, n, device=dev)) for b, m, n in banks]
    emb = torch.nn.Parameter(torch.randn(1024 if args.small else 8192, 64 if args.small else 512, device=dev))
    scalars = [torch.nn.Parameter(torch.randn(512, device=dev)) for _ in range(60)]
    for p in [*params, emb, *scalars]:
        p.grad = torch.randn_like(p)
    muon = Muon(params, lr=0.02, momentum=0.95, coefficients="polar_express", row_normalize=True, weight_decay=0.095)
    adam = torch.optim.AdamW([emb, *scalars], lr=0.02, fused=dev.type == "cuda")
    t = median_seconds(lambda: (muon.step(), adam.step()))
    print(f"\nwhole optimizer step (Muon on the 4 banks + AdamW), 1 {dev.type}: {t * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
