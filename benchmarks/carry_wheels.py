"""Download, here (where PyPI is reachable), the wheels the GPU suite compares against and the
device image lacks, into an ignored folder that a device call carries; print the device
command line that installs them.

The device image (python 3.12, torch 2.11 + CUDA 13, triton 3.6, transformers 5.x, einops) has
no liger-kernel, flash-linear-attention or flash-attn, and cannot reach a registry. Wheels are
asked for with the device's tags (`pip download --no-deps --only-binary=:all:`), so a package
without a matching wheel is reported, never built or guessed. Each wheel's requirements are
read from its METADATA: those the image lacks are fetched too; those it has are checked
against its versions.

    python benchmarks/carry_wheels.py                # -> .carry/wheels/, prints the install line
    python benchmarks/carry_wheels.py --out DIR --limit-mib 64
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.12"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_34_x86_64", "manylinux_2_35_x86_64"]
# What the suite compares against; versions fit torch 2.11 / triton 3.6 (their METADATA is checked below).
WANTED = ["liger-kernel==0.8.5", "flash-linear-attention==0.6.0", "flash-attn"]
# The device image's versions of what those wheels require (device README, KINDS.md, 2026-11).
DEVICE_HAS = {"torch": "2.11.0", "triton": "3.6.0", "transformers": "5.17.0", "einops": None, "numpy": "2.5.2",
              "packaging": None, "ninja": None}
CARRY_LIMIT_MIB = 64


def pip_download(spec: str, dest: Path) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           PYTHON_VERSION, "--implementation", "cp", "-d", str(dest), spec]
    for p in PLATFORMS:
        cmd[4:4] = ["--platform", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = (r.stdout + r.stderr).strip().splitlines()
    return r.returncode == 0, next((ln for ln in reversed(lines) if "ERROR" in ln or "Saved" in ln or "already" in ln),
                                   lines[-1] if lines else "")


def requirements(wheel: Path) -> list[str]:
    """Requires-Dist lines that apply without extras."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Requires-Dist:")]
    return [r for r in reqs if "extra ==" not in r]


def req_name(req: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")


def version_ok(req: str, version: str | None) -> str:
    """'ok', or why the device's version does not meet the requirement (packaging does the maths)."""
    if version is None:
        return "ok (present; version not recorded)"
    from packaging.requirements import Requirement

    spec = Requirement(req.split(";")[0]).specifier
    return "ok" if spec.contains(version, prereleases=True) else f"device has {version}, needs {spec}"


def collect(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    report, queue, seen = [], list(WANTED), set()
    while queue:
        spec = queue.pop(0)
        name = req_name(spec)
        if name in seen:
            continue
        seen.add(name)
        before = set(out.glob("*.whl"))
        ok, message = pip_download(spec, out)
        new = sorted(set(out.glob("*.whl")) - before) or sorted(out.glob(f"{name.replace('-', '_')}-*.whl"))
        entry = {"package": spec, "found": ok and bool(new), "message": message, "wheels": [], "requires": []}
        for wheel in new:
            entry["wheels"].append((wheel.name, wheel.stat().st_size))
            for req in requirements(wheel):
                dep = req_name(req)
                if dep in DEVICE_HAS:
                    entry["requires"].append((req, version_ok(req, DEVICE_HAS[dep])))
                else:
                    entry["requires"].append((req, "not on the device: fetched"))
                    queue.append(req.split(";")[0].replace(" ", ""))
        report.append(entry)
    return report


def install_line(folder: str) -> str:
    return (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
            f"{folder}/*.whl && export PYTHONPATH=/tmp/site${{PYTHONPATH:+:$PYTHONPATH}} || exit;")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".carry" / "wheels", help="an ignored folder of the repo")
    ap.add_argument("--limit-mib", type=float, default=CARRY_LIMIT_MIB, help="what a device call carries in all")
    args = ap.parse_args()
    report = collect(args.out)
    total = 0
    for e in report:
        print(f"{e['package']}: {'found' if e['found'] else 'NO WHEEL'} ({e['message']})")
        for name, size in e["wheels"]:
            total += size
            print(f"    {name}  {size / 2**20:.2f} MiB")
        for req, verdict in e["requires"]:
            print(f"    requires {req}: {verdict}")
    wheels = sorted(args.out.glob("*.whl"))
    on_disk = sum(w.stat().st_size for w in wheels)
    print(f"\n{len(wheels)} wheels in {args.out}: {on_disk / 2**20:.2f} MiB (limit {args.limit_mib:.0f} MiB for the "
          f"whole carried tree, repo included)")
    rel = args.out.resolve().relative_to(REPO) if args.out.resolve().is_relative_to(REPO) else args.out
    print(f"\ncarry: [\"{rel}\"]   (ignored by .gitignore, so it travels only when carried)\n"
          f"device command starts with:\n  {install_line(str(rel))}")
    if on_disk > args.limit_mib * 2**20:
        print(f"ERROR: {on_disk / 2**20:.1f} MiB exceeds the {args.limit_mib:.0f} MiB a device call carries",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
