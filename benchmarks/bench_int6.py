"""pgolf::int6_matmul against dequantize + cuBLAS and against bf16 matmul on unpacked weights.

Shapes: M in {1, 16, 64, 256, 4096, 98,304} for K x N in {512x512, 512x2048}, bf16
activations. The op picks its own path by M (CUDA kernel / Triton / dequant + cuBLAS);
PGOLF_INT6_BACKEND=triton|cuda forces one. Median ms of repeats, ratios in the same run.

    python benchmarks/bench_int6.py                    # GPU
    python benchmarks/bench_int6.py --device cpu --small
"""
from __future__ import annotations


import torch

from harness import kernel_bench_args, median_seconds
from pgolf.ops.int6_matmul import int6_matmul, pack_int6, unpack_int6


def main() -> None:
    args, dev = kernel_bench_args()
    ms = [1, 16, 64] if args.small else [1, 16, 64, 256, 4096, 98_304]
    print("| M | K x N | int6_matmul ms | dequant + matmul ms | bf16 matmul ms | vs dequant | vs bf16 |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for k, n in ((512, 512), (512, 2048)):
        g = torch.Generator(device=dev).manual_seed(0)
        codes = torch.randint(-31, 32, (n, k), device=dev, generator=g, dtype=torch.int8)
        packed = pack_int6(codes)
        scales = torch.rand(n, device=dev, generator=g) * 0.02
        w = (codes.float() * scales[:, None]).bfloat16()
        for m in ms:
            x = torch.randn(m, k, device=dev, generator=g).bfloat16()
            t_op = median_seconds(lambda: int6_matmul(x, packed, scales, k))
            t_deq = median_seconds(lambda: x @ (unpack_int6(packed, k).bfloat16() * scales.bfloat16()[:, None]).T)
            t_bf16 = median_seconds(lambda: x @ w.T)
            print(f"| {m} | {k}x{n} | {t_op * 1e3:.4f} | {t_deq * 1e3:.4f} | {t_bf16 * 1e3:.4f} | "
                  f"{t_deq / t_op:.2f}x | {t_bf16 / t_op:.2f}x |")


if __name__ == "__main__":
    main()
