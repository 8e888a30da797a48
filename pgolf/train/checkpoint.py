"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint file is MAGIC, the sha256 of the payload, then the payload: a torch.save
file read back with weights_only=True (tensors and plain containers only), for this
machine's own runs; artifacts for others use pgolf.export. A run only writes them; reading
one back (a resume, `pgolf export`) is pgolf.train.checkpoint_read, which verifies it first.
"""
from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import torch

from pgolf.fileio import atomic_open

FORMAT = "pgolf.checkpoint/2"
MAGIC = b"PGOLFCKP"
DIGEST = 32  # the sha256 after MAGIC


def save_checkpoint(path: str | Path, *, config: dict, step: int, training_time_ms: float, model,
                    optimizer_states: list[dict], loader, data_fingerprint: str,
                    hessians: dict | None = None, ema: dict | None = None) -> None:
    state = {
        "format": FORMAT,
        "config": config,
        "step": step,
        "training_time_ms": training_time_ms,
        "model": model.state_dict(),
        "optimizers": optimizer_states,
        "loader": loader.state_dict(),
        "data_fingerprint": data_fingerprint,  # the training data's identity (loader.dataset_fingerprint)
        "hessians": hessians,  # GPTQ's, when collected: `pgolf export` can re-quantize without train data
        "ema": ema,  # the fp32 EMA of the weights (pgolf.optim.ema), when on
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    with atomic_open(path, "wb") as f:
        f.write(MAGIC)
        f.write(hashlib.sha256(payload).digest())
        f.write(payload)
