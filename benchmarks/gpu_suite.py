"""One command that validates and times pgolf on one GPU, inside its own wall-clock budget.

Parts, most important first; a part (or an item inside one) that no longer fits the budget is
skipped with a note, and a hard stop writes what exists if a part overruns:
  1. environment: device, versions, measured copy bandwidth and bf16 matmul TFLOP/s (the ceilings)
  2. correctness: every op in suite_ops.OPS against its fp64/fp32 truth, fresh random inputs,
     poisoned outputs, eager and compiled; error norms printed
  3. microbenchmarks: each op at its issue's shapes against the same-run baselines (eager,
     torch.compile, Liger / fla when importable), triton.testing.do_bench medians
  4. training: ms/step and tokens/s of the baseline preset and every larger one (synthetic
     tokens), compile time to the first step apart; the reference train_gpt.py when given
  5. eval: the plain evaluator's tokens/s, and record_1855's own eval (score-first LoRA TTT with its
     global SGD phase) on a 2^18-token synthetic stream, by part, projected to the whole val on 8 GPUs
Output: suite.json (every figure) and suite.md (tables for benchmarks/RESULTS.md) under --out,
rewritten after every part.

    python benchmarks/gpu_suite.py --out $OUT                       # on the GPU (default budget 450 s)
    python benchmarks/gpu_suite.py --out /tmp/s --dry-run           # CPU, tiny shapes, Triton interpreter
    python benchmarks/gpu_suite.py --out $OUT --reference ref/train_gpt.py --reference-tokenizer ref/sp1024.model
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONAL_PACKAGES = ("liger-kernel", "flash-linear-attention", "fla-core", "flash-attn")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="pgolf's one-command GPU validation and benchmark suite")
    ap.add_argument("--out", type=Path, required=True, help="directory for suite.json and suite.md")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, Triton interpreter: checks the suite")
    ap.add_argument("--budget", type=float, default=None, help="wall-clock seconds (default 450; dry run 110)")
    ap.add_argument("--parts", default="environment,correctness,micro,train,eval",
                    help="comma-separated parts to run, in this priority order")
    ap.add_argument("--presets", default="", help="comma-separated presets to time (default: baseline and larger)")
    ap.add_argument("--train-steps", type=int, default=5, help="timed steps per preset after warm-up")
    ap.add_argument("--reference", type=Path, help="the challenge's train_gpt.py (kept outside the project)")
    ap.add_argument("--reference-tokenizer", type=Path, help="an sp1024 SentencePiece .model for --reference")
    ap.add_argument("--seed", type=int, default=None, help="input seed (default: drawn per run)")
    ap.add_argument("--commit", default="", help="the commit to record (the device's copy has no .git)")
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 110.0 if args.dry_run else 450.0
    return args


def prepare_imports(dry_run: bool) -> None:
    """Make pgolf and its kernels importable from a plain checkout (the device copies the tree and
    installs nothing). The interpreter flag must be set before any kernel module is imported."""
    if dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    for path in (REPO, REPO / "benchmarks"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if importlib.util.find_spec("pgolf_kernels") is None:  # `pip install -e .` maps kernels/ to this name
        spec = importlib.util.spec_from_file_location("pgolf_kernels", REPO / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "kernels")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["pgolf_kernels"] = module
        spec.loader.exec_module(module)


# ---------------------------------------------------------------------------------------
# Part 1: the environment and its two ceilings


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    for name in OPTIONAL_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from pgolf.ops.int6_matmul import _cuda_ext
    out["pgolf._C"] = "built" if _cuda_ext() is not None else "absent (python setup.py build_ext --inplace)"
    return out


def device_info(device) -> dict:
    import torch

    from harness import device_name

    info = {"device": device_name()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20))
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def environment_part(ctx) -> None:
    import torch

    from suite_core import time_ms

    dev = ctx.device
    row = {**device_info(dev), **versions()}
    n = 2**18 if ctx.dry_run else 2**29  # bf16 elements: 1 GiB a side on the GPU, far above L2
    src = torch.randn(n, device=dev).bfloat16()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), dev, ctx.dry_run)
    row["copy_gbps"] = round(2 * 2 * n / (ms * 1e-3) / 1e9, 1)  # bytes read + written
    size = 256 if ctx.dry_run else 8192
    a, b = (torch.randn(size, size, device=dev).bfloat16() for _ in range(2))  # random data: zeros run faster
    ms = time_ms(lambda: a @ b, dev, ctx.dry_run)
    row["matmul_tflops"] = round(2 * size ** 3 / (ms * 1e-3) / 1e12, 2)
    row["matmul_shape"] = f"{size}^3 bf16"
    ctx.record("environment", row)


# ---------------------------------------------------------------------------------------
# Parts 2 and 3: the op registry


def correctness_part(ctx) -> None:
    from suite_core import run_check
    from suite_ops import OPS

    for op in OPS:
        if not ctx.allows("correctness", op.name, 5 if ctx.dry_run else op.check_s):
            continue
        for check in op.checks(ctx):
            ctx.record("correctness", run_check(check, ctx, poison_bytes=2**22 if ctx.dry_run else 2**32))
        if op.info is not None:
            try:
                op.info(ctx)
            except Exception as e:  # noqa: BLE001 (a figure beside the checks; its failure is noted)
                ctx.record("correctness", {"op": op.name, "check": "info", "note": f"{type(e).__name__}: {e}"[:300]})


def micro_part(ctx) -> None:
    from suite_ops import OPS

    for op in OPS:
        if ctx.allows("micro", op.name, 5 if ctx.dry_run else op.bench_s):
            try:
                op.bench(ctx)
            except Exception as e:  # noqa: BLE001 (one op's failure must not cost the others' figures)
                ctx.record("micro", {"op": op.name, "status": "failed", "note": f"{type(e).__name__}: {e}"[:400]})


@contextlib.contextmanager
def torch_paths_in_dry_run(ctx):
    """Whole-model parts of the dry run take the ops' torch paths: the interpreter runs a Muon
    step of even a tiny model in about a minute, and the kernels were checked in part 2. On a
    GPU nothing changes."""
    if not ctx.dry_run:
        yield
        return
    os.environ["TRITON_INTERPRET"] = "0"  # pgolf.ops.backend.interpreting() reads it per call
    try:
        yield
    finally:
        os.environ["TRITON_INTERPRET"] = "1"


def train_part(ctx) -> None:
    from suite_train import train_part as run

    with torch_paths_in_dry_run(ctx):
        run(ctx)


def eval_part(ctx) -> None:
    from suite_train import eval_part as run

    with torch_paths_in_dry_run(ctx):
        run(ctx)


PARTS = {  # name -> (GPU seconds it needs to start, dry-run seconds, function); listed by priority
    "environment": (10, 2, environment_part),
    "correctness": (60, 10, correctness_part),
    "micro": (90, 10, micro_part),
    "train": (90, 15, train_part),
    "eval": (30, 5, eval_part),
}


# ---------------------------------------------------------------------------------------
# The Markdown table


def render_markdown(results: dict) -> str:
    from suite_core import md_table

    meta = results.get("meta", {})
    env = (results.get("environment") or [{}])[0]
    lines = [f"# pgolf GPU suite{' (DRY RUN: CPU, tiny shapes, figures meaningless)' if meta.get('dry_run') else ''}",
             "", f"device: {env.get('device', '?')} | date: {meta.get('date')} | commit: {meta.get('commit')} | "
             f"torch {env.get('torch')} | triton {env.get('triton')} | CUDA {env.get('cuda')} | "
             f"command: `{meta.get('command')}`", "",
             f"ceilings (measured in this run): copy {env.get('copy_gbps')} GB/s (read + write), bf16 matmul "
             f"{env.get('matmul_tflops')} TFLOP/s ({env.get('matmul_shape')})", ""]
    targets = [r for sec in ("micro", "train") for r in results.get(sec, []) if "target" in r]
    sections = [
        ("Targets", targets, [("figure", "op"), ("item", "item"), ("shape", "shape"), ("provider", "provider"),
                              ("speed-up", "speedup"), ("vs", "vs"), ("ratio to reference", "pgolf_baseline_ratio"),
                              ("target", "target"), ("met", "met")]),
        ("Correctness", results.get("correctness", []),
         [("op", "op"), ("check", "check"), ("mode", "mode"), ("passed", "passed"), ("metric", "metric"),
          ("errors", "errors"), ("tolerance", "tol"), ("note", "note")]),
        ("Microbenchmarks (triton.testing.do_bench medians)", results.get("micro", []),
         [("op", "op"), ("shape", "shape"), ("provider", "provider"), ("ms", "ms"), ("fwd ms", "fwd_ms"),
          ("rate", "rate"), ("unit", "unit"), ("% of ceiling", "pct_of_ceiling"), ("speed-up", "speedup"),
          ("vs", "vs"), ("peak MiB", "peak_mib"), ("note", "note")]),
        ("Training (one GPU, synthetic tokens)", results.get("train", []),
         [("item", "item"), ("params", "params"), ("tokens/step", "global_batch_tokens"), ("accum", "grad_accum"),
          ("first step s (compile)", "first_step_s"), ("ms/step", "ms_per_step"), ("spread ms", "ms_spread"),
          ("tokens/s", "tokens_per_s"), ("peak MiB", "peak_mib"), ("vs reference", "pgolf_baseline_ratio"),
          ("note", "note")]),
        ("Eval", results.get("eval", []),
         [("item", "item"), ("tokens", "tokens"), ("first pass s", "first_pass_s"), ("s", "seconds"),
          ("tokens/s", "tokens_per_s"), ("note", "note")]),
        ("Parts", results.get("parts", []), [("part", "part"), ("status", "status"), ("seconds", "seconds"),
                                             ("note", "note")]),
    ]
    for title, rows, columns in sections:
        lines += [f"## {title}", "", md_table(rows, columns) if rows else "(none)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    prepare_imports(args.dry_run)
    import random

    import torch

    from harness import commit
    from suite_core import Budget, Context, Part, run_parts, start_watchdog, write_outputs

    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    if args.reference and not args.reference.is_file():
        print(f"gpu_suite: --reference {args.reference}: no such file", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 20)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer runs
    ctx = Context(device, args.dry_run, Budget(args.budget))
    ctx.options.update(seed=seed, compile_backend="aot_eager" if args.dry_run else "inductor",
                       presets=[p for p in args.presets.split(",") if p] or None, train_steps=args.train_steps,
                       reference=args.reference, reference_tokenizer=args.reference_tokenizer)
    ctx.results["meta"] = {"date": str(datetime.date.today()), "commit": args.commit or commit(),
                           "dry_run": args.dry_run, "budget_s": args.budget, "seed": seed,
                           "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}

    def save():
        with ctx.lock:
            ctx.results["meta"]["elapsed_s"] = round(ctx.budget.elapsed(), 1)
            write_outputs(ctx.results, args.out, render_markdown(ctx.results))

    def expire():
        ctx.results["meta"]["aborted"] = f"hard stop at {args.budget + 30:.0f} s: the running part overran"
        save()
        print(f"gpu_suite: {ctx.results['meta']['aborted']}; partial results in {args.out}", flush=True)

    start_watchdog(args.budget + 30, expire)
    wanted = [p for p in args.parts.split(",") if p]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        print(f"gpu_suite: --parts: unknown {unknown} (known: {list(PARTS)})", file=sys.stderr)
        return 2
    parts = [Part(name, PARTS[name][1] if args.dry_run else PARTS[name][0], PARTS[name][2])
             for name in PARTS if name in wanted]
    run_parts(parts, ctx, on_progress=save)
    save()
    print("\n" + render_markdown(ctx.results))
    failed = [r for r in ctx.results.get("correctness", []) if r.get("passed") is False]
    print(f"\ngpu_suite: {len(failed)} correctness check(s) failed; wrote {args.out / 'suite.json'} and "
          f"{args.out / 'suite.md'} in {ctx.budget.elapsed():.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
