"""Static resources of the GDN Triton kernels on Hopper, without a GPU: compile each kernel ahead
of time for sm_90a at the configurations the launchers use, then read registers, spills and
shared memory from the cubin. This says whether a kernel fits; it says nothing about its speed.

    python benchmarks/aot_resources.py [--warps 4 8] [--prec tf32x3 tf32]
"""
from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from harness import header

# the cuobjdump Triton ships (the system CUDA's may be older than the cubins Triton writes)
CUOBJDUMP = next((str(p) for p in [Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"]
                  if p.is_file()), shutil.which("cuobjdump") or "cuobjdump")


def load(name: str):
    return importlib.import_module(f"pgolf_kernels.{name}")


def signature(fn, pointers: dict[str, str], ints=(), floats=()) -> dict[str, str]:
    """Triton signature of `fn`: the given pointer dtypes, i32/fp32 scalars, constexpr for the rest."""
    sig = {}
    for name in fn.arg_names:
        if name in pointers:
            sig[name] = pointers[name]
        elif name in ints:
            sig[name] = "i32"
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "constexpr"
    return sig


def resource_usage(cubin: bytes) -> str:
    """Registers, spills and shared memory of a compiled kernel, read by cuobjdump."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.cubin"
        path.write_bytes(cubin)
        r = subprocess.run([CUOBJDUMP, "-res-usage", str(path)], capture_output=True, text=True)
    text = r.stdout + r.stderr
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text))
    if "REG" not in fields:
        return f"cuobjdump failed: {text.strip()[:300]}"
    return (f"{fields['REG']} registers, {fields.get('LOCAL', '?')} B local (spills), "
            f"{fields.get('STACK', '?')} B stack, {fields.get('SHARED', '?')} B static smem")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--prec", nargs="+", default=["tf32x3", "tf32"], help="tl.dot input precisions to compile")
    args = ap.parse_args()
    if not Path(CUOBJDUMP).is_file() and not shutil.which(CUOBJDUMP):
        sys.exit("cuobjdump not found (Triton ships one; so does nvcc)")
    print(header("python " + " ".join(sys.argv)))
    chunk, state = load("gdn_chunk"), load("gdn_state")
    target = GPUTarget("cuda", 90, 32)
    io = "*bf16"
    cases = {
        "wy_fwd": (chunk._wy_fwd_kernel, {"k_ptr": io, "v_ptr": io}, dict(LOG2C=6)),
        "output_fwd": (chunk._output_fwd_kernel, {"q_ptr": io, "k_ptr": io, "o_ptr": io}, {}),
        "output_bwd": (chunk._output_bwd_kernel, {"q_ptr": io, "k_ptr": io, "do_ptr": io, "dq_ptr": io}, {}),
        "wy_bwd": (chunk._wy_bwd_kernel, {"k_ptr": io, "v_ptr": io, "dk_ptr": io, "dv_ptr": io}, dict(LOG2C=6)),
        "state_fwd": (state._state_fwd_kernel, {}, {}),
        "state_bwd": (state._state_bwd_kernel, {}, {}),
    }
    print("\n| kernel | dots | warps | resources (sm_90a, C = 64, K = V = 64, bf16 I/O) |\n|---|---|---:|---|")
    for name, (fn, io_ptrs, extra) in cases.items():
        pointers = {a: io_ptrs.get(a, "*i64" if a in ("tok_ptr", "starts_ptr") else
                                 "*i32" if a == "len_ptr" else "*fp32") for a in fn.arg_names if a.endswith("_ptr")}
        sig = signature(fn, pointers, ints=("H", "K", "V"), floats=("scale",))
        for prec in args.prec if "PREC" in fn.arg_names else ["default"]:
            consts = dict(C=64, BK=64, BV=64, **extra, **({"PREC": prec} if "PREC" in fn.arg_names else {}))
            for warps in args.warps:
                try:
                    compiled = triton.compile(ASTSource(fn, sig, consts), target=target, options={"num_warps": warps})
                    report = resource_usage(compiled.asm["cubin"])
                except Exception as e:  # report and go on: one kernel's failure should not hide the rest
                    cause = str(e).strip().splitlines()[-1]
                    report = f"compile failed: {type(e).__name__}: {cause[:300]}"
                print(f"| {name} | {prec} | {warps} | {report} |", flush=True)


if __name__ == "__main__":
    main()
