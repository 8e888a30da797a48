"""Training checkpoints: everything needed to continue a run exactly, written atomically.

They are torch.save files read back with weights_only=True (tensors and plain
containers only), for this machine's own runs; artifacts for others use pgolf.export.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open

FORMAT = "pgolf.checkpoint/1"


def save_checkpoint(path: str | Path, *, config: dict, step: int, training_time_ms: float, model,
                    optimizer_states: list[dict], loader, hessians: dict | None = None) -> None:
    state = {
        "format": FORMAT,
        "config": config,
        "step": step,
        "training_time_ms": training_time_ms,
        "model": model.state_dict(),
        "optimizers": optimizer_states,
        "loader": loader.state_dict(),
        "hessians": hessians,  # GPTQ's, when collected: `pgolf export` can re-quantize without train data
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PgolfError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise PgolfError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PgolfError(f"{path} is not a {FORMAT} checkpoint")
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
