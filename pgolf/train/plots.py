"""The PNG of a run's loss and val_bpb curves, drawn by the commands after training (`pgolf train`,
the demo), not by the trainer: a packed train_gpt.py then carries no plotting code and needs no
matplotlib."""
from __future__ import annotations

import json
import math
from pathlib import Path


def plot_run(run_dir: Path) -> Path | None:
    """The run's curves.png (None when there is nothing to plot)."""
    png = run_dir / "curves.png"
    return png if plot_curves(run_dir / "metrics.jsonl", png) else None


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
