"""Run logs: a JSONL record per event, the same as a readable line, a progress bar, and a
PNG of the loss and val_bpb curves at the end. Only rank 0 writes."""
from __future__ import annotations

import json
import math
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


def plot_curves(jsonl: Path, png: Path) -> bool:
    """Train loss and val_bpb against step; returns False when there is nothing to plot."""
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    train = [(r["step"], r["train_loss"]) for r in records if r["event"] == "train" and math.isfinite(r["train_loss"])]
    val = [(r["step"], r["val_bpb"]) for r in records if r["event"] == "val"]
    if not train and not val:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(8, 4.5))
    if train:
        ax1.plot(*zip(*train), color="tab:blue", label="train loss (nats/token)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("train loss", color="tab:blue")
    if val:
        ax2 = ax1.twinx()
        ax2.plot(*zip(*val), "o-", color="tab:red", label="val_bpb")
        ax2.set_ylabel("val_bpb", color="tab:red")
    ax1.set_title(jsonl.parent.name)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
