"""Reading a training checkpoint back (pgolf.train.checkpoint writes them): for a resumed run
(pgolf.train.resume) and `pgolf export`, never for a run from scratch, so a packed script does not
carry it. Like artifacts, a checkpoint is verified before use: the checksum (one flipped byte is
refused), then every field's presence and type, so nothing downstream meets a damaged or crafted value.
"""
from __future__ import annotations

import hashlib
import io
import math
import random
from pathlib import Path

import torch

from pgolf.errors import PgolfError
from pgolf.train.checkpoint import DIGEST, FORMAT, MAGIC


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PgolfError(f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file")
    data = path.read_bytes()
    if data[:len(MAGIC)] != MAGIC:
        raise PgolfError(f"{path} is not a {FORMAT} checkpoint")
    payload = memoryview(data)[len(MAGIC) + DIGEST:]
    if len(data) < len(MAGIC) + DIGEST or hashlib.sha256(payload).digest() != data[len(MAGIC):len(MAGIC) + DIGEST]:
        raise PgolfError(f"checkpoint {path}: checksum mismatch; the file is corrupt or was modified")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise PgolfError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PgolfError(f"{path} is not a {FORMAT} checkpoint")
    state.setdefault("ema", None)  # checkpoints from before the EMA existed had none
    _check_fields(state, path)
    return state


def _is_int(v) -> bool:
    return type(v) is int


def _tensor_dict(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


_FIELDS = {  # field -> (what it must be, the check)
    "config": ("a dict of config sections", lambda v: isinstance(v, dict) and all(isinstance(s, dict) for s in v.values())),
    "step": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "training_time_ms": ("a finite non-negative number",
                         lambda v: type(v) in (int, float) and math.isfinite(v) and v >= 0),
    "model": ("a dict of name -> tensor", _tensor_dict),
    "optimizers": ("a list of optimizer state dicts", lambda v: isinstance(v, list) and all(isinstance(o, dict) for o in v)),
    "loader": ("a dict", lambda v: isinstance(v, dict)),
    "data_fingerprint": ("a sha256 hex string", lambda v: isinstance(v, str) and len(v) == 64),
    "hessians": ("null or a dict of name -> tensor", lambda v: v is None or _tensor_dict(v)),
    "ema": ("null or a dict of name -> tensor", lambda v: v is None or _tensor_dict(v)),
    "rng": ("{torch: uint8 tensor, python: 625 integers, cuda: list of tensors}",
            lambda v: isinstance(v, dict) and isinstance(v.get("torch"), torch.Tensor) and v["torch"].dtype == torch.uint8
            and isinstance(v.get("python"), list) and len(v["python"]) == 625 and all(map(_is_int, v["python"]))
            and isinstance(v.get("cuda"), list) and all(isinstance(t, torch.Tensor) for t in v["cuda"])),
}


def _check_fields(state: dict, path: Path) -> None:
    for name, (what, ok) in _FIELDS.items():
        if name not in state:
            raise PgolfError(f"checkpoint {path}: field {name!r} is missing")
        if not ok(state[name]):
            raise PgolfError(f"checkpoint {path}: field {name!r} must be {what}")


def restore_rng(state: dict, source: str) -> None:
    try:
        torch.set_rng_state(state["torch"])
        random.setstate((3, tuple(state["python"]), None))
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (RuntimeError, ValueError, OverflowError) as e:  # a crafted state of the right types
        raise PgolfError(f"checkpoint {source}: field 'rng' is not a valid generator state ({e})") from None
