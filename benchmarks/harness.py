"""Tiny timing harness shared by the benchmarks: median of repeats plus run metadata."""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(command: str) -> str:
    return (f"device: {device_name()} | date: {datetime.date.today()} | commit: {commit()} | "
            f"torch {torch.__version__} | command: `{command}`")


def kernel_bench_args(ap: argparse.ArgumentParser | None = None) -> tuple[argparse.Namespace, torch.device]:
    """--device and --small for a kernel benchmark (plus what `ap` already has); prints the header."""
    ap = ap or argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny shapes (to check the script on a CPU)")
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    return args, torch.device(args.device)
