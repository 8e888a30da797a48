"""The LeakyReLU(0.5)² MLP, forward + backward: pgolf::leaky_relu2_mlp against the baselines.

    (a) eager: F.linear -> F.leaky_relu(0.5) -> square -> F.linear, all bf16
    (b) torch.compile of (a)
    pgolf leaky_relu2_mlp (the Triton GEMMs with the activation in their epilogues)
At the record's shape per GPU (spec §5: 786,432 tokens / 8 GPUs = 98,304 rows, dim 512,
hidden 2048, bf16). Reported: correctness of every provider against fp64 (relative
Frobenius error of out, dx, dW_up, dW_down: the bf16 eager row is the bar to meet),
median ms and TFLOP/s of the fused forward+backward (6 GEMMs, 12·M·D·H flops) and of the
gradient-free forward (2 GEMMs), the speed-up over (a), and peak memory.

    python benchmarks/bench_mlp.py                        # GPU: the record's shape
    python benchmarks/bench_mlp.py --device cpu --small   # checks the script itself

For the GPU suite: `suite_checks(device, dry_run)` gives the correctness checks (dicts with
the fields of suite_core.Check) and `suite_bench(device, dry_run, timer)` the timing rows.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F

from harness import kernel_bench_args, median_seconds, sync
from pgolf.ops.leaky_relu2_mlp import leaky_relu_squared_mlp
from pgolf.ops.reference import reference_leaky_relu2_mlp

SLOPE = 0.5
RECORD_SHAPE = (98_304, 512, 2048)  # rows per GPU, dim, hidden
SMALL_SHAPE = (300, 64, 256)  # rows not a multiple of any tile
TOL = 5e-3  # relative Frobenius error of a bf16 output whose bf16 inputs the fp64 truth shares
TOL_INTERPRETER = 1e-2  # the interpreter truncates bf16 stores (one more ulp than round-to-nearest)
OUTPUTS = ("out", "dx", "dw_up", "dw_down")


def eager_mlp(x, w_up, w_down):
    return F.linear(F.leaky_relu(F.linear(x, w_up), SLOPE).square(), w_down)


def pgolf_mlp(x, w_up, w_down):
    return leaky_relu_squared_mlp(x, w_up, w_down, SLOPE)


def providers(compile_backend: str = "inductor") -> dict[str, Callable]:
    compiled = torch.compile(eager_mlp, backend=compile_backend, dynamic=False)
    return {"(a) eager": eager_mlp, "(b) torch.compile": compiled, "pgolf leaky_relu2_mlp": pgolf_mlp}


def make_case(device, shape, dtype=torch.bfloat16, seed: int = 0) -> dict:
    """x, weights (scaled like the trained model's: unit-RMS activations) and an upstream gradient."""
    m, d, h = shape
    g = torch.Generator(device=device).manual_seed(seed)
    return {"x": torch.randn(m, d, device=device, generator=g).to(dtype),
            "w_up": (torch.randn(h, d, device=device, generator=g) * d ** -0.5).to(dtype),
            "w_down": (torch.randn(d, h, device=device, generator=g) * h ** -0.5).to(dtype),
            "dout": torch.randn(m, d, device=device, generator=g).to(dtype)}


def outputs_of(fn: Callable, case: dict, dtype=None) -> dict:
    """{out, dx, dw_up, dw_down} of fn on the case's tensors (cast to `dtype` when given)."""
    leaves = [case[k].to(dtype or case[k].dtype, copy=True).requires_grad_() for k in ("x", "w_up", "w_down")]
    out = fn(*leaves)
    out.backward(case["dout"].to(out.dtype))
    return dict(zip(OUTPUTS, (out.detach(), *(t.grad for t in leaves)), strict=True))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------
# For benchmarks/gpu_suite.py


def suite_checks(device, dry_run: bool, compile_backend: str = "inductor") -> list[dict]:
    """Correctness checks: each dict has the fields of suite_core.Check (op, name, mode,
    candidate, reference, tol); candidate() and reference() return {output: tensor}."""
    shape = SMALL_SHAPE if dry_run else RECORD_SHAPE
    case = make_case(device, shape, seed=1)
    name = "M={} D={} H={} bf16, slope 0.5".format(*shape)

    def reference():
        return outputs_of(lambda *t: reference_leaky_relu2_mlp(*t, SLOPE), case, torch.float64)

    compiled = torch.compile(pgolf_mlp, backend=compile_backend, dynamic=False)
    tol = TOL_INTERPRETER if os.environ.get("TRITON_INTERPRET") == "1" else TOL
    return [{"op": "leaky_relu2_mlp", "name": name, "mode": mode, "candidate": lambda fn=fn: outputs_of(fn, case),
             "reference": reference, "tol": {"*": tol}}
            for mode, fn in (("eager", pgolf_mlp), ("compiled", compiled))]


def time_ms_default(fn: Callable[[], object], device) -> float:
    if torch.device(device).type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    return 1e3 * median_seconds(fn, repeats=3, warmup=1)


def peak_mib(fn: Callable[[], object], device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    fn()  # warm: compiled graphs and the allocator's pools
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def suite_bench(device, dry_run: bool, timer: Callable | None = None, compile_backend: str = "inductor") -> list[dict]:
    """Timing rows {op, shape, provider, pass, ms, tflops, speedup, vs, peak_mib}: every provider's
    forward+backward and gradient-free forward, the speed-up over (a) eager in the same run."""
    timer = timer or (lambda fn: time_ms_default(fn, device))
    shape = SMALL_SHAPE if dry_run else RECORD_SHAPE
    m, d, h = shape
    case = make_case(device, shape)
    leaves = [case[k].clone().requires_grad_() for k in ("x", "w_up", "w_down")]
    rows, base = [], {}
    for name, fn in providers(compile_backend).items():
        def train_pass(fn=fn):
            fn(*leaves).backward(case["dout"])
            for t in leaves:
                t.grad = None

        def forward(fn=fn):
            with torch.no_grad():
                fn(case["x"], case["w_up"], case["w_down"])

        for label, run, flops in (("fwd+bwd", train_pass, 12 * m * d * h), ("fwd, no grad", forward, 4 * m * d * h)):
            ms = timer(run)
            base.setdefault(label, ms)
            rows.append({"op": "leaky_relu2_mlp", "shape": "M={} D={} H={} bf16".format(*shape), "provider": name,
                         "pass": label, "ms": round(ms, 4), "tflops": round(flops / (ms * 1e-3) / 1e12, 1),
                         "speedup": round(base[label] / ms, 3), "vs": "(a) eager",
                         "peak_mib": peak_mib(run, device)})
    return rows


# ---------------------------------------------------------------------------------------


def main() -> None:
    args, dev = kernel_bench_args()
    shape = SMALL_SHAPE if args.small else RECORD_SHAPE
    backend = "inductor" if dev.type == "cuda" else "aot_eager"  # no C++ build for a CPU script check
    print("M={} D={} H={} bf16, LeakyReLU(0.5)²\n".format(*shape))

    case = make_case(dev, shape, seed=1)
    ref = outputs_of(lambda *t: reference_leaky_relu2_mlp(*t, SLOPE), case, torch.float64)
    print(f"Relative error against fp64 (the bar: (a) eager bf16; tolerance {TOL:.0e})\n")
    print("| provider | " + " | ".join(OUTPUTS) + " |")
    print("|---|" + "---:|" * len(OUTPUTS))
    for name, fn in providers(backend).items():
        got = outputs_of(fn, case)
        print(f"| {name} | " + " | ".join(f"{rel_error(got[k], ref[k]):.2e}" for k in OUTPUTS) + " |")
    del ref, case

    print("\n| provider | pass | ms | TFLOP/s | speed-up vs (a) | peak MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for row in suite_bench(dev, args.small, compile_backend=backend):
        peak = "" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        print(f"| {row['provider']} | {row['pass']} | {row['ms']:.3f} | {row['tflops']} | {row['speedup']:.2f}x | "
              f"{peak} |")


if __name__ == "__main__":
    main()
