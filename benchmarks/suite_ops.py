"""The op registry of the GPU suite: per op, its correctness checks and its microbenchmarks.

An op that lands later is one more `OpSpec` in `OPS` (a fused MLP, an attention backend):
`checks(ctx)` returns `Check`s (candidate vs truth, in suite_core), `bench(ctx)` records
rows {op, shape, provider, ms, ...} with the same-run baseline named in `speedup_vs`.
Shapes are the production / issue shapes on a GPU and tiny ones in the dry run.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from suite_core import Check, Context, sync, time_ms

SOFTCAP = 30.0
FP32_OUT = 2e-3  # fp32 outputs of tf32x3 / fp32-accumulated kernels, long reductions


def bf16_out(ctx: Context) -> float:
    """Rel error allowed on a bf16-stored output whose inputs the reference shares: rounding alone
    gives ~1.1e-3 on a GPU; the CPU interpreter truncates bf16 stores (twice the error). Kept
    under 1e-2 so that an output off by 1% of its RMS fails."""
    return 8e-3 if ctx.dry_run else 5e-3


@dataclass
class OpSpec:
    name: str
    checks: Callable[[Context], list[Check]]
    bench: Callable[[Context], None]
    check_s: float  # GPU seconds the checks need (compiles included): the budget's estimate
    bench_s: float
    info: Callable[[Context], None] | None = None  # figures beside the checks (agreement with a library)


def compiled(fn, ctx: Context):
    """torch.compile with the suite's backend (inductor on a GPU; aot_eager in the dry run, which
    still traces the ops' fake implementations but skips the CPU C++ build). Default dynamism, as
    a user gets it: the first shape compiles static, the second recompiles once with dynamic
    sizes that the later shapes reuse (a compile per shape would cost the lease a minute)."""
    return torch.compile(fn, backend=ctx.options.get("compile_backend", "inductor"))


def gen(ctx: Context, seed: int) -> torch.Generator:
    """Fresh random inputs for every check: a seed drawn per run unless --seed fixes it."""
    return torch.Generator(device=ctx.device).manual_seed(ctx.options.get("seed", 0) * 1000 + seed)


def record_bench(ctx: Context, op: str, shape: str, provider: str, ms: float, *, work: float | None = None,
                 unit: str = "", ceiling: float | None = None, base_ms: float | None = None,
                 baseline: str = "", target: float | None = None, extra: dict | None = None) -> None:
    """One microbenchmark row: median ms, the rate (GB/s or TFLOP/s) and its share of the
    measured ceiling, and the speed-up over the same-run baseline."""
    row = {"op": op, "shape": shape, "provider": provider, "ms": round(ms, 5)}
    if work is not None and ms > 0:
        rate = work / (ms * 1e-3) / (1e9 if unit == "GB/s" else 1e12)
        row.update(rate=round(rate, 2), unit=unit)
        if ceiling:
            row["pct_of_ceiling"] = round(100 * rate / ceiling, 1)
    if base_ms is not None and ms > 0:
        row.update(speedup=round(base_ms / ms, 3), vs=baseline)
        if target is not None:
            row.update(target=target, met=bool(base_ms / ms >= target))
    if ctx.dry_run:
        row["note"] = "dry run: CPU / interpreter timing, meaningless"
    row.update(extra or {})
    ctx.record("micro", row)


def measure(ctx: Context, op: str, shape: str, provider: str, fn) -> float | None:
    """Median ms of fn, or None after recording why it failed (one provider's failure, e.g. a
    library that rejects the shape, must not cost the other rows)."""
    try:
        return time_ms(fn, ctx.device, ctx.dry_run)
    except Exception as e:  # noqa: BLE001
        ctx.record("micro", {"op": op, "shape": shape, "provider": provider, "status": "failed",
                             "note": f"{type(e).__name__}: {e}"[:300]})
        return None


def fwd_bwd(fn, leaves, cotangent=None):
    def run():
        out = fn(*leaves)
        out.backward(cotangent) if cotangent is not None else out.backward()
        for t in leaves:
            t.grad = None
    return run


def ceilings(ctx: Context) -> tuple[float | None, float | None]:
    env = ctx.results.get("environment", [{}])[0] if ctx.results.get("environment") else {}
    return env.get("copy_gbps"), env.get("matmul_tflops")


# ---------------------------------------------------------------------------------------
# Softcapped cross-entropy (logits form and the fused linear form)


def _ce_inputs(ctx, n, v, seed):
    g = gen(ctx, seed)
    logits = (torch.randn(n, v, device=ctx.device, generator=g) * 8).bfloat16()
    targets = torch.randint(0, v, (n,), device=ctx.device, generator=g)
    targets[torch.rand(n, device=ctx.device, generator=g) < 0.01] = -100  # ignore_index rows
    weights = torch.randint(1, 5, (n,), device=ctx.device, generator=g).float()  # byte weights
    return logits, targets, weights


def _ce_grads(fn, leaves):
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves]


def ce_checks(ctx: Context) -> list[Check]:
    from pgolf.ops.reference import reference_softcapped_ce
    from pgolf.ops.softcapped_ce import linear_softcapped_cross_entropy, softcapped_cross_entropy

    n, v, d = (96, 160, 32) if ctx.dry_run else (65_536, 8192, 512)
    logits, targets, weights = _ce_inputs(ctx, n, v, 1)

    def ref():
        loss, (dx,) = _ce_grads(lambda x: reference_softcapped_ce(x, targets, weights, SOFTCAP), [logits])
        return {"loss": loss, "dlogits": dx}

    def cand(fn):
        def run():
            loss, (dx,) = _ce_grads(lambda x: fn(x, targets, weights, softcap=SOFTCAP), [logits])
            return {"loss": loss, "dlogits": dx}
        return run

    tol = {"loss": 1e-5, "dlogits": bf16_out(ctx)}
    checks = [Check("softcapped_ce", f"N={n} V={v} bf16, weights, ignore_index", mode, cand(fn), ref, tol)
              for mode, fn in (("eager", softcapped_cross_entropy),
                               ("compiled", compiled(softcapped_cross_entropy, ctx)))]

    g = gen(ctx, 2)
    hidden = torch.randn(n, d, device=ctx.device, generator=g).bfloat16()
    head = (torch.randn(v, d, device=ctx.device, generator=g) * 0.05).bfloat16()
    chunk = 32 if ctx.dry_run else 8192

    def linear_ref():
        # fp64 from the bf16 GEMM's logits (the kernel's own first step): the CE, its gradient
        # and both products in fp64, so only the kernel's arithmetic is under test.
        z = (hidden @ head.T).double().requires_grad_()
        loss = reference_softcapped_ce(z, targets, weights, SOFTCAP)
        loss.backward()
        return {"loss": loss.detach(), "dhidden": z.grad @ head.double(), "dweight": z.grad.T @ hidden.double()}

    def linear_cand(fn):
        def run():
            loss, (dh, dw) = _ce_grads(lambda h, w: fn(h, w, targets, weights, softcap=SOFTCAP, chunk_rows=chunk),
                                       [hidden, head])
            return {"loss": loss, "dhidden": dh, "dweight": dw}
        return run

    tol = {"loss": 1e-4, "dhidden": bf16_out(ctx), "dweight": bf16_out(ctx)}
    checks += [Check("linear_softcapped_ce", f"N={n} V={v} D={d} bf16, chunk {chunk}", mode, linear_cand(fn),
                     linear_ref, tol)
               for mode, fn in (("eager", linear_softcapped_cross_entropy),
                                ("compiled", compiled(linear_softcapped_cross_entropy, ctx)))]
    return checks


def liger_providers():
    try:
        from liger_kernel.transformers.functional import liger_cross_entropy, liger_fused_linear_cross_entropy
    except ImportError:
        return None, None
    return (lambda x, t: liger_cross_entropy(x, t, softcap=SOFTCAP),
            lambda h, w, t: liger_fused_linear_cross_entropy(h, w, t, softcap=SOFTCAP))


def ce_bench(ctx: Context) -> None:
    from bench_ce import eager_ce
    from pgolf.ops.softcapped_ce import linear_softcapped_cross_entropy, softcapped_cross_entropy

    copy_gbps, _ = ceilings(ctx)
    shapes = [(64, 128)] if ctx.dry_run else [(n, v) for n in (65_536, 98_304) for v in (1024, 8192)]
    d = 32 if ctx.dry_run else 512
    liger, liger_linear = liger_providers()
    for n, v in shapes:
        if not ctx.allows("micro", f"softcapped_ce N={n} V={v}", 25):
            continue
        logits, targets, _ = _ce_inputs(ctx, n, v, 3)
        leaf = logits.requires_grad_()
        providers = {"eager fp32": eager_ce, "torch.compile": compiled(eager_ce, ctx),
                     "pgolf": lambda x, t: softcapped_cross_entropy(x, t, softcap=SOFTCAP)}
        if liger is not None:
            providers["liger"] = liger
        base = None
        for name, fn in providers.items():  # liger last: it writes its gradient into the logits
            ms = measure(ctx, "softcapped_ce fwd+bwd", f"N={n} V={v}", name,
                         fwd_bwd(lambda x, fn=fn: fn(x, targets), [leaf]))
            if ms is None:
                continue
            base = base or ms
            record_bench(ctx, "softcapped_ce fwd+bwd", f"N={n} V={v}", name, ms, work=3 * n * v * 2, unit="GB/s",
                         ceiling=copy_gbps, base_ms=base, baseline="eager fp32",
                         target=4.0 if name == "pgolf" else None)
        if liger is None:
            ctx.record("micro", {"op": "softcapped_ce fwd+bwd", "shape": f"N={n} V={v}", "provider": "liger",
                                 "note": "liger-kernel not importable (carry its wheel: benchmarks/carry_wheels.py)"})

        if n != shapes[0][0]:
            continue  # the fused linear form at the first N only (each shape costs a compile)
        g = gen(ctx, 4)
        hidden = torch.randn(n, d, device=ctx.device, generator=g).bfloat16().requires_grad_()
        head = (torch.randn(v, d, device=ctx.device, generator=g) * 0.05).bfloat16().requires_grad_()
        linear = {"matmul + eager": lambda h, w: eager_ce(h @ w.T, targets),
                  "matmul + torch.compile": compiled(lambda h, w: eager_ce(h @ w.T, targets), ctx),
                  "pgolf linear": lambda h, w: linear_softcapped_cross_entropy(h, w, targets, softcap=SOFTCAP)}
        if liger_linear is not None:
            linear["liger fused linear"] = lambda h, w: liger_linear(h, w, targets)
        base = None
        for name, fn in linear.items():
            run = fwd_bwd(fn, [hidden, head])
            ms = measure(ctx, "linear_softcapped_ce fwd+bwd", f"N={n} V={v} D={d}", name, run)
            if ms is None:
                continue
            base = base or ms
            record_bench(ctx, "linear_softcapped_ce fwd+bwd", f"N={n} V={v} D={d}", name, ms,
                         work=3 * 2 * n * v * d, unit="TFLOP/s", ceiling=ceilings(ctx)[1], base_ms=base,
                         baseline="matmul + eager", extra={"peak_mib": peak_mib(run, ctx.device)})


def peak_mib(fn, device) -> float | None:
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)


# ---------------------------------------------------------------------------------------
# Newton-Schulz


RECORD_BANKS = [(22, 512, 512), (22, 256, 512), (11, 2048, 512), (11, 512, 2048)]
DRY_BANKS = [(2, 32, 32), (2, 64, 32)]
NS_STEPS = 5


def ns_banks(ctx: Context) -> list[tuple[int, int, int]]:
    return DRY_BANKS if ctx.dry_run else RECORD_BANKS


def ns_check_banks(ctx: Context) -> list[tuple[int, int, int]]:
    """A square bank and a tall one (transposed inside the op)."""
    return DRY_BANKS if ctx.dry_run else [RECORD_BANKS[0], RECORD_BANKS[2]]


def conditioned(ctx: Context, b: int, m: int, n: int, seed: int, cond: float = 25.0) -> torch.Tensor:
    """A bank whose singular values spread over [1/cond, 1], as gradients' do (plain randn has
    near-zero ones, which Newton-Schulz amplifies ~8x per step and no comparison survives)."""
    k = min(m, n)
    g = gen(ctx, seed)
    u = torch.linalg.qr(torch.randn(b, m, k, device=ctx.device, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(b, n, k, device=ctx.device, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), k, dtype=torch.float64, device=ctx.device)
    return ((u * s) @ v.mT).float()


def ns_one_step_reference(x: torch.Tensor, abc) -> torch.Tensor:
    """One step in fp64 from the op's own bf16-rounded, normalised input (so the check sees only
    the step's arithmetic: ~1.7e-3 in bf16 against the ~1.2e-2 that five bf16 steps accumulate)."""
    from pgolf.ops.newton_schulz import normalized_input

    tall = x.shape[-2] > x.shape[-1]
    y = normalized_input(x.mT if tall else x, 1.0, 1e-7, torch.bfloat16).double()
    a, b, c = abc
    gram = y @ y.mT
    y = a * y + (b * gram + c * gram @ gram) @ y
    return y.mT if tall else y


def ns_checks(ctx: Context) -> list[Check]:
    from pgolf.ops.backend import kernel_module, use_triton
    from pgolf.ops.newton_schulz import coefficient_schedule, newton_schulz

    first = coefficient_schedule("polar_express", 1)[0]
    checks = []
    for b, m, n in ns_check_banks(ctx):
        x = conditioned(ctx, b, m, n, 10 + m)
        for mode, fn in (("eager", newton_schulz), ("compiled", compiled(newton_schulz, ctx))):
            checks.append(Check("newton_schulz", f"{b}x{m}x{n}, one polar_express step from the bf16 input", mode,
                                lambda x=x, fn=fn: {"out": fn(x, 1, "polar_express")},
                                lambda x=x: {"out": ns_one_step_reference(x, first)}, {"out": bf16_out(ctx)}))
    y = conditioned(ctx, *ns_banks(ctx)[0], 11).bfloat16()
    if use_triton(y):  # the symmetric Gram kernel itself, into a poisoned output
        def gram():
            out = torch.full((y.shape[0], y.shape[1], y.shape[1]), float("nan"), device=y.device, dtype=y.dtype)
            return {"gram": kernel_module("newton_schulz").sym_gram(y, out=out)}
        checks.append(Check("newton_schulz", f"sym_gram {tuple(y.shape)} bf16", "kernel", gram,
                            lambda: {"gram": y.double() @ y.double().mT}, {"gram": bf16_out(ctx)}))
    return checks


def ns_five_steps(ctx: Context) -> None:
    """The production call (5 steps) against fp64: a figure (bf16 through five steps lands near
    1e-2 by itself, so it cannot be a pass/fail comparison); the gap in singular values too."""
    from pgolf.ops.newton_schulz import coefficient_schedule, newton_schulz
    from pgolf.ops.reference import newton_schulz_reference
    from suite_core import rel_error, sv_error

    for b, m, n in ns_check_banks(ctx)[:1] if ctx.dry_run else ns_check_banks(ctx):
        x = conditioned(ctx, b, m, n, 13)
        out = newton_schulz(x, NS_STEPS, "polar_express")
        ref = newton_schulz_reference(x.double(), coefficient_schedule("polar_express", NS_STEPS))
        ctx.record("correctness", {"op": "newton_schulz", "check": f"{b}x{m}x{n}, {NS_STEPS} polar_express steps "
                                   "vs fp64 (figure)", "mode": "info",
                                   "errors": {"rel": float(f"{rel_error(out, ref):.3e}"),
                                              "sv_gap": float(f"{sv_error(out[:2], ref[:2]):.3e}")}})


def ns_bench(ctx: Context) -> None:
    from bench_ns import eager
    from pgolf.ops.newton_schulz import coefficient_schedule, newton_schulz

    _, peak = ceilings(ctx)
    flat = [v for abc in coefficient_schedule("polar_express", NS_STEPS) for v in abc]
    fast = compiled(eager, ctx)
    for b, m, n in ns_banks(ctx)[:1] if ctx.dry_run else ns_banks(ctx):
        if not ctx.allows("micro", f"newton_schulz {b}x{m}x{n}", 15):
            continue
        x = conditioned(ctx, b, m, n, 12).bfloat16()
        small, big = min(m, n), max(m, n)
        flops = b * NS_STEPS * (4 * small ** 2 * big + 2 * small ** 3)
        base = None
        for name, fn in (("eager bf16", lambda: eager(x, flat)), ("torch.compile", lambda: fast(x, flat)),
                         ("pgolf", lambda: newton_schulz(x, NS_STEPS, "polar_express"))):
            ms = measure(ctx, "newton_schulz", f"{b}x{m}x{n}", name, fn)
            if ms is None:
                continue
            base = base or ms
            record_bench(ctx, "newton_schulz", f"{b}x{m}x{n}", name, ms, work=flops, unit="TFLOP/s", ceiling=peak,
                         base_ms=base, baseline="eager bf16", target=1.5 if name == "pgolf" else None)


# ---------------------------------------------------------------------------------------
# int6 matmul (Triton and the CUDA pgolf._C build)


@contextlib.contextmanager
def int6_backend(name: str):
    old = os.environ.get("PGOLF_INT6_BACKEND")
    os.environ["PGOLF_INT6_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["PGOLF_INT6_BACKEND"]
        else:
            os.environ["PGOLF_INT6_BACKEND"] = old


def _int6_problem(ctx, m, k, n, seed):
    from pgolf.ops.int6_matmul import pack_int6

    g = gen(ctx, seed)
    codes = torch.randint(-32, 32, (n, k), device=ctx.device, generator=g, dtype=torch.int8)
    scales = torch.rand(n, device=ctx.device, generator=g) * 0.02 + 1e-3
    x = torch.randn(m, k, device=ctx.device, generator=g).bfloat16()
    return x, codes, pack_int6(codes), scales


def int6_backends() -> list[str]:
    """The paths to check: dispatch by M, Triton forced, and the CUDA kernel when pgolf._C is built."""
    from pgolf.ops.int6_matmul import _cuda_ext

    return ["", "triton"] + (["cuda"] if _cuda_ext() is not None else [])


def int6_checks(ctx: Context) -> list[Check]:
    from pgolf.ops.int6_matmul import int6_matmul

    k, n = (40, 24) if ctx.dry_run else (512, 2048)
    checks = []
    for m in (1, 16, 64) + (() if ctx.dry_run else (4096,)):
        x, codes, packed, scales = _int6_problem(ctx, m, k, n, 20 + m)
        ref = lambda x=x, codes=codes, scales=scales: {"y": x.double() @ (codes.double() * scales.double()[:, None]).T}
        for backend in int6_backends():
            if backend == "cuda" and m > 16:
                continue  # the CUDA kernel serves M <= 16 only (it refuses more)

            def cand(x=x, packed=packed, scales=scales, backend=backend):
                with int6_backend(backend):
                    return {"y": int6_matmul(x, packed, scales, k)}
            checks.append(Check("int6_matmul", f"M={m} K={k} N={n} bf16, backend={backend or 'dispatch'}", "eager",
                                cand, ref, {"y": bf16_out(ctx)}))
    x, codes, packed, scales = _int6_problem(ctx, 16, k, n, 30)
    fn = compiled(lambda x: int6_matmul(x, packed, scales, k), ctx)
    checks.append(Check("int6_matmul", f"M=16 K={k} N={n} bf16", "compiled", lambda: {"y": fn(x)},
                        lambda: {"y": x.double() @ (codes.double() * scales.double()[:, None]).T},
                        {"y": bf16_out(ctx)}))
    return checks


def int6_bench(ctx: Context) -> None:
    from pgolf.ops.int6_matmul import int6_matmul, unpack_int6

    copy_gbps, peak = ceilings(ctx)
    ms_list = [16] if ctx.dry_run else [1, 16, 64, 256, 4096, 98_304]
    kn = [(40, 24)] if ctx.dry_run else [(512, 512), (512, 2048)]
    for k, n in kn:
        for m in ms_list:
            if not ctx.allows("micro", f"int6_matmul M={m} {k}x{n}", 8):
                continue
            x, codes, packed, scales = _int6_problem(ctx, m, k, n, 40)
            w = (codes.float() * scales[:, None]).bfloat16()
            deq = lambda: x @ (unpack_int6(packed, k).bfloat16() * scales.bfloat16()[:, None]).T
            providers = {"dequant + cuBLAS": deq, "bf16 matmul (unpacked)": lambda: x @ w.T}
            if m <= 16:  # the target's range
                providers["dequant + torch.compile"] = compiled(deq, ctx)
            for backend in int6_backends():
                if backend == "cuda" and m > 16:
                    continue
                providers[f"pgolf {backend or 'dispatch'}"] = (
                    lambda b=backend: _with_backend(b, lambda: int6_matmul(x, packed, scales, k)))
            base = None
            small = m <= 16
            for name, fn in providers.items():
                ms = measure(ctx, "int6_matmul", f"M={m} K={k} N={n}", name, fn)
                if ms is None:
                    continue
                base = base or ms
                traffic = n * k * 3 / 4 + n * 4 + m * k * 2 + m * n * 2  # packed weights, scales, x, y
                record_bench(ctx, "int6_matmul", f"M={m} K={k} N={n}", name, ms,
                             work=traffic if small else 2 * m * k * n, unit="GB/s" if small else "TFLOP/s",
                             ceiling=copy_gbps if small else peak, base_ms=base, baseline="dequant + cuBLAS",
                             target=2.0 if small and name.startswith("pgolf") else None)


def _with_backend(name, fn):
    with int6_backend(name):
        return fn()


# ---------------------------------------------------------------------------------------
# GDN chunk scan (forward + backward, fixed length and varlen)


def gdn_inputs(ctx, b, t, h, d, seed):
    g = torch.Generator(device="cpu").manual_seed(ctx.options.get("seed", 0) * 1000 + seed)
    rnd = lambda *s: torch.randn(*s, generator=g).to(ctx.device)
    q, k, v = rnd(b, t, h, d), F.normalize(rnd(b, t, h, d), dim=-1), rnd(b, t, h, d)
    gate = -F.softplus(rnd(b, t, h) - 2.0)  # mean decay e^-0.13 per token, as a trained layer's
    beta = torch.sigmoid(rnd(b, t, h))
    return [x.bfloat16() for x in (q, k, v)] + [gate, beta]


def random_cu_seqlens(ctx, total: int, seed: int) -> torch.Tensor:
    """Document boundaries as doc isolation makes them: mostly long documents, some tiny, one empty."""
    g = torch.Generator().manual_seed(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(int(torch.randint(1, 8, (1,), generator=g)) if len(lengths) % 5 == 1
                       else int(torch.randint(total // 16 + 1, total // 3 + 2, (1,), generator=g)))
    lengths[-1] -= sum(lengths) - total
    lengths.insert(1, 0)
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=ctx.device)


def _gdn_run(fn, xs, s0, cu, do, dfinal):
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    s0 = s0.detach().clone().requires_grad_() if s0 is not None else None
    o, final = fn(*leaves, initial_state=s0, cu_seqlens=cu)
    ((o.to(do.dtype) * do).sum() + (final.to(dfinal.dtype) * dfinal).sum()).backward()
    out = {"o": o.detach(), "final": final.detach()}
    out.update({f"d{n}": x.grad for n, x in zip(("q", "k", "v", "g", "beta"), leaves)})
    if s0 is not None:
        out["ds0"] = s0.grad
    return out


def gdn_tol(ctx: Context) -> dict:
    bf = bf16_out(ctx)
    return {"o": bf, "final": FP32_OUT, "dq": bf, "dk": bf, "dv": bf, "dg": FP32_OUT, "dbeta": FP32_OUT,
            "ds0": FP32_OUT}


def gdn_checks(ctx: Context) -> list[Check]:
    from pgolf.ops.gdn import gdn_chunk_scan

    h, d = (2, 16) if ctx.dry_run else (8, 64)
    cases = [("fixed length", (2, 64) if ctx.dry_run else (48, 2048), False),
             ("varlen (cu_seqlens, empty doc, initial state)", (1, 100) if ctx.dry_run else (1, 98_304), True)]
    checks = []
    for label, (b, t), varlen in cases:
        xs = gdn_inputs(ctx, b, t, h, d, 50 + t)
        cu = random_cu_seqlens(ctx, t, 7) if varlen else None
        n_seq = cu.numel() - 1 if varlen else b
        g = gen(ctx, 51)
        s0 = torch.randn(n_seq, h, d, d, device=ctx.device, generator=g) * 0.1 if varlen else None
        do = torch.randn(b, t, h, d, device=ctx.device, generator=g).bfloat16()  # o's gradient is bf16 anyway
        dfinal = torch.randn(n_seq, h, d, d, device=ctx.device, generator=g)
        # the truth: the same inputs in fp64 through the batched torch path (tested against the
        # token-by-token recurrence in tests/), cotangents in fp64
        ref = (lambda xs=xs, s0=s0, cu=cu, do=do, dfinal=dfinal:
               _gdn_run(gdn_chunk_scan, [x.double() for x in xs], s0.double() if s0 is not None else None, cu,
                        do.double(), dfinal.double()))
        modes = (("eager", gdn_chunk_scan),) + ((("compiled", compiled(gdn_chunk_scan, ctx)),) if varlen else ())
        for mode, fn in modes:
            checks.append(Check("gdn_chunk_scan", f"{label}: B={b} T={t} H={h} K=V={d} bf16, fwd+bwd", mode,
                                lambda fn=fn, xs=xs, s0=s0, cu=cu, do=do, dfinal=dfinal:
                                _gdn_run(fn, xs, s0, cu, do, dfinal), ref, gdn_tol(ctx)))
    return checks


def gdn_fla_agreement(ctx: Context) -> None:
    """pgolf against fla on the same bf16 inputs: a figure, not a pass/fail (fla keeps bf16 intermediates)."""
    from pgolf.ops.fla_gdn import fla_available, fla_chunk_scan
    from pgolf.ops.gdn import gdn_chunk_scan

    ok, reason = fla_available(ctx.device)
    if not ok:
        ctx.record("correctness", {"op": "gdn_chunk_scan", "check": "agreement with fla", "note": reason})
        return
    b, t, h, d = 1, 98_304, 8, 64
    xs = gdn_inputs(ctx, b, t, h, d, 60)
    cu = random_cu_seqlens(ctx, t, 8)
    g = gen(ctx, 61)
    do = torch.randn(b, t, h, d, device=ctx.device, generator=g)
    dfinal = torch.randn(cu.numel() - 1, h, d, d, device=ctx.device, generator=g)
    ours, theirs = _gdn_run(gdn_chunk_scan, xs, None, cu, do, dfinal), _gdn_run(fla_chunk_scan, xs, None, cu, do,
                                                                                dfinal)
    from suite_core import rel_error
    ctx.record("correctness", {"op": "gdn_chunk_scan", "check": f"agreement with fla, varlen T={t}", "mode": "info",
                               "errors": {k: float(f"{rel_error(ours[k], theirs[k]):.3e}") for k in theirs}})


def gdn_bench(ctx: Context) -> None:
    from bench_gdn import attention
    from pgolf.ops.fla_gdn import fla_available, fla_chunk_scan
    from pgolf.ops.gdn import gdn_chunk_scan

    h, d = (2, 16) if ctx.dry_run else (8, 64)
    shapes = [(2, 64)] if ctx.dry_run else [(98_304 // t, t) for t in (1024, 2048)]
    have_fla, reason = fla_available(ctx.device)
    providers = {"pgolf": lambda *xs: gdn_chunk_scan(*xs)[0]}
    if have_fla:
        providers["fla"] = lambda *xs: fla_chunk_scan(*xs)[0]
    providers["attention (SDPA, causal)"] = attention
    for b, t in shapes:
        if not ctx.allows("micro", f"gdn_chunk_scan {b}x{t}", 20):
            continue
        xs = gdn_inputs(ctx, b, t, h, d, 70)
        times = {}
        for name, fn in providers.items():
            leaves = [x.detach().clone().requires_grad_() for x in xs]
            shape = f"B={b} T={t} H={h} K=V={d}"
            with torch.no_grad():
                fwd = measure(ctx, "gdn_chunk_scan fwd", shape, name, lambda fn=fn: fn(*leaves))
                out = fn(*leaves) if fwd is not None else None  # attention's layout is [B, H, T, D]
            if out is None:
                continue
            do = torch.randn(out.shape, device=ctx.device, generator=gen(ctx, 71)).to(out.dtype)
            both = measure(ctx, "gdn_chunk_scan fwd+bwd", shape, name, fwd_bwd(fn, leaves, do))
            if both is not None:
                times[name] = (fwd, both)
        if "pgolf" not in times:
            continue
        for name, (fwd, both) in times.items():
            base = times.get("fla", times["pgolf"])[1] if name != "fla" else both
            record_bench(ctx, "gdn_chunk_scan fwd+bwd", f"B={b} T={t} H={h} K=V={d}", name, both,
                         base_ms=base if "fla" in times else None, baseline="fla" if "fla" in times else "",
                         target=1.0 if name == "pgolf" and "fla" in times else None, extra={"fwd_ms": round(fwd, 5)})
        if not have_fla:
            ctx.record("micro", {"op": "gdn_chunk_scan fwd+bwd", "shape": f"B={b} T={t}", "provider": "fla",
                                 "note": reason})


def mlp_checks(ctx: Context) -> list[Check]:
    from bench_mlp import suite_checks

    backend = ctx.options.get("compile_backend", "inductor")  # as `compiled` above
    return [Check(**c) for c in suite_checks(ctx.device, ctx.dry_run, compile_backend=backend)]


def mlp_bench(ctx: Context) -> None:
    from bench_mlp import suite_bench

    backend = ctx.options.get("compile_backend", "inductor")
    for row in suite_bench(ctx.device, ctx.dry_run, timer=lambda fn: time_ms(fn, ctx.device, ctx.dry_run),
                           compile_backend=backend):
        ctx.record("micro", row)


OPS = [
    OpSpec("softcapped_ce", ce_checks, ce_bench, check_s=25, bench_s=90),
    OpSpec("newton_schulz", ns_checks, ns_bench, check_s=25, bench_s=45, info=ns_five_steps),
    OpSpec("int6_matmul", int6_checks, int6_bench, check_s=20, bench_s=60),
    OpSpec("gdn_chunk_scan", gdn_checks, gdn_bench, check_s=40, bench_s=45, info=gdn_fla_agreement),
    OpSpec("leaky_relu2_mlp", mlp_checks, mlp_bench, check_s=60, bench_s=90),
]
