"""Run logs: a JSONL record per event, the same as a readable line, and a progress bar. Only
rank 0 writes. (The curves' PNG is pgolf.train.plots, drawn by the commands.)"""
from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool, total_steps: int = 0, progress: bool = True):
        self.enabled = enabled
        self.jsonl = run_dir / "metrics.jsonl"
        self.text = run_dir / "train.log"
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, disable=not (enabled and progress),
                        leave=False) if enabled else None
        self.start = time.time()

    def event(self, kind: str, console: bool = True, **fields) -> None:
        if not self.enabled:
            return
        record = {"event": kind, "wall_s": round(time.time() - self.start, 3), **fields}
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        line = kind + " " + " ".join(f"{k}:{_fmt(v)}" for k, v in fields.items())
        with open(self.text, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if console:
            (self.bar.write if self.bar is not None else print)(line)

    def step(self, n: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
