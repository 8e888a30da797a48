"""The gated delta rule, forward + backward: pgolf::gdn_chunk_scan against the baselines.

At the issue's shapes (98,304 tokens per step, H = 8, K = V = 64, T in {1024, 2048}):
  pgolf::gdn_chunk_scan (Triton)
  fla.ops.gated_delta_rule.chunk_gated_delta_rule (if flash-linear-attention is installed)
  causal attention of the same shape (F.scaled_dot_product_attention, bf16)
Reported: median ms of forward and of forward + backward, and pgolf's ratio to each.
Before timing, pgolf's kernels are checked at the first shape against its torch chunked
implementation (fp32, same algebra, no Triton) and against fla when present.

First-step latency: a fresh process with an empty Triton cache imports, builds inputs and
runs one forward + backward; the wall time includes every compilation.

    python benchmarks/bench_gdn.py                       # GPU: the issue's shapes
    python benchmarks/bench_gdn.py --device cpu --small  # checks the script itself
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

from harness import kernel_bench_args, median_seconds


def inputs(b, t, h, d, device, dtype=torch.bfloat16, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(device)
    q, k, v = rnd(b, t, h, d), F.normalize(rnd(b, t, h, d), dim=-1), rnd(b, t, h, d)
    g = -F.softplus(rnd(b, t, h) - 2.0)  # mean decay e^-0.13 per token, like a trained layer's
    beta = torch.sigmoid(rnd(b, t, h))
    return [x.to(dtype) for x in (q, k, v)] + [g, beta]


def leaves(xs):
    return [x.detach().clone().requires_grad_() for x in xs]


def pgolf_scan(q, k, v, g, beta):
    from pgolf.ops.gdn import gdn_chunk_scan
    return gdn_chunk_scan(q, k, v, g, beta)[0]


def fla_scan():
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError:
        return None
    return lambda q, k, v, g, beta: chunk_gated_delta_rule(q, k, v, g, beta, scale=q.shape[-1] ** -0.5)[0]


def attention(q, k, v, g, beta):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)


def timed(fn, xs, backward: bool) -> float:
    ls = leaves(xs)
    do = torch.randn_like(fn(*ls).float()).to(xs[2].dtype)

    def run():
        out = fn(*ls)
        if backward:
            out.backward(do)
            for x in ls:
                x.grad = None
    return 1e3 * median_seconds(run, repeats=10, warmup=3)


def rms_ratio(ref, got):
    ref, got = ref.detach().double(), got.detach().double()
    return float((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


def check(xs, fla):
    """pgolf's kernels against its torch chunked path (fp32), forward and every gradient; and against fla."""
    from pgolf.ops import gdn

    q, k, v, g, beta = xs
    b, t, h, d = q.shape
    scale = d ** -0.5
    ls = leaves(xs)
    o = gdn.gdn_chunk_scan(*ls)[0]
    do = torch.randn_like(o)
    o.backward(do)
    f32 = [x.float() for x in xs]
    ref_o, _ = gdn._chunk_forward(*f32, None, None, scale, 64)
    dfinal = torch.zeros(b, h, d, d, device=q.device)
    ref_grads = gdn._chunk_backward(*f32, None, None, scale, 64, do.float(), dfinal)[:5]
    lines = [f"  vs torch chunked fp32: o {rms_ratio(ref_o, o):.1e}"]
    lines += [f"{n} {rms_ratio(r, x.grad):.1e}" for n, r, x in zip(("dq", "dk", "dv", "dg", "dbeta"), ref_grads, ls)]
    if fla is not None:
        fl = leaves(xs)
        fo = fla(*fl)
        fo.backward(do)
        lines.append(f"\n  vs fla: o {rms_ratio(fo, o):.1e} " + " ".join(
            f"{n} {rms_ratio(y.grad, x.grad):.1e}" for n, x, y in zip(("dq", "dk", "dv", "dg", "dbeta"), ls, fl)))
    return " ".join(lines)


FIRST_STEP = """
import time, torch, sys
t0 = time.perf_counter()
sys.path.insert(0, {bench!r})
from bench_gdn import inputs, leaves, {fn}
fn = {fn}() if {factory} else {fn}
xs = leaves(inputs({b}, {t}, 8, 64, "cuda"))
fn(*xs).float().sum().backward()
torch.cuda.synchronize()
print(time.perf_counter() - t0)
"""


def first_step_seconds(fn: str, factory: bool, b: int, t: int) -> float:
    """A cold start: a fresh interpreter and an empty Triton cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TRITON_CACHE_DIR=cache)
        code = FIRST_STEP.format(bench=os.path.dirname(os.path.abspath(__file__)), fn=fn, factory=factory, b=b, t=t)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if r.returncode:
            return float("nan")
        return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=98_304)
    ap.add_argument("--no-first-step", action="store_true")
    args, dev = kernel_bench_args(ap)
    fla = fla_scan() if dev.type == "cuda" else None
    print(f"fla: {'present' if fla else 'not installed (no fla column)'}")
    shapes = [(2, 128)] if args.small else [(args.tokens // t, t) for t in (1024, 2048)]
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    h, d = (2, 16) if args.small else (8, 64)
    print(check(inputs(*shapes[0], h, d, dev, dtype), fla))
    rows = [("pgolf", pgolf_scan), ("fla", fla), ("attention (SDPA)", attention)]
    print("\n| B x T | impl | fwd ms | fwd+bwd ms | pgolf fwd+bwd speed-up vs this |")
    print("|---|---|---:|---:|---:|")
    for b, t in shapes:
        xs = inputs(b, t, h, d, dev, dtype)
        results = {}
        for name, fn in rows:
            if fn is None:
                continue
            results[name] = (timed(fn, xs, False), timed(fn, xs, True))
        for name, (fwd, both) in results.items():
            print(f"| {b} x {t} | {name} | {fwd:.3f} | {both:.3f} | {both / results['pgolf'][1]:.2f}x |")
    if dev.type == "cuda" and not args.no_first_step:
        b, t = shapes[0]
        print(f"\nfirst step (fresh process, empty Triton cache, {b} x {t}, fwd+bwd, seconds): "
              f"pgolf {first_step_seconds('pgolf_scan', False, b, t):.1f}"
              + (f", fla {first_step_seconds('fla_scan', True, b, t):.1f}" if fla else ""))


if __name__ == "__main__":
    main()
