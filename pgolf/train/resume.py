"""Continuing a run from its checkpoint (run.resume): the option's own code, imported only where a
run resumes (pgolf.export.trace.OPTIONAL), so a packed script, which reproduces a run from scratch,
carries none of it.

`load_resume` runs in the trainer's set-up, before the run directory exists: a checkpoint that does
not fit this run stops it cleanly. `start_resumed` runs after priming (which restores what it
touched), just before the loop: the step, the clock's training time and the RNG continue.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pgolf.config import from_dict
from pgolf.errors import PgolfError
from pgolf.train.checkpoint_read import load_checkpoint, restore_rng

if TYPE_CHECKING:
    from pgolf.train.trainer import Trainer

# Settings a resumed run may change; the data are compared by content (the dataset fingerprint), not path.
RESUMABLE = {"train": {"iterations", "val_every", "log_every", "checkpoint_every", "max_wallclock_seconds"},
             "data": {"path", "tokenizer"}}


def load_resume(t: Trainer, path: str) -> dict:
    """Read and check a checkpoint to continue from, and load its state into the trainer's model,
    optimizers, EMA and loader; returns what `start_resumed` needs."""
    cfg = t.cfg
    state = load_checkpoint(path)
    mine, theirs = cfg.to_dict(), from_dict(state["config"], f"checkpoint {path}").to_dict()
    differing = [f"{s}.{k}" for s in ("model", "optim", "data", "train") for k in mine[s]
                 if mine[s][k] != theirs[s][k] and k not in RESUMABLE.get(s, ())]
    if differing:
        raise PgolfError(f"cannot resume {path}: the config differs in {', '.join(differing)}")
    if state["data_fingerprint"] != t.data_fingerprint:
        raise PgolfError(f"cannot resume {path}: data.path={cfg.data.path} / data.tokenizer are not the data it "
                         f"was trained on (the dataset manifest or the tokenizer's sha256 differ)")
    if state["step"] >= cfg.train.iterations:
        raise PgolfError(f"cannot resume {path}: it is at step {state['step']}, so train.iterations="
                         f"{cfg.train.iterations} leaves nothing to train (raise it, or re-export the "
                         f"checkpoint with `pgolf export`)")
    if t.clock.out_of_time(state["training_time_ms"]):
        raise PgolfError(f"cannot resume {path}: its {state['training_time_ms'] / 1000:.1f} s of training already "
                         f"reach the stop under train.max_wallclock_seconds={cfg.train.max_wallclock_seconds}")
    try:
        t.model.load_state_dict(state["model"])
        if len(state["optimizers"]) != len(t.optimizers):
            raise ValueError(f"{len(state['optimizers'])} optimizer states for {len(t.optimizers)} optimizers")
        for opt, s in zip(t.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise PgolfError(f"checkpoint {path}: its weights or optimizer state do not fit this model "
                         f"({str(e).splitlines()[0]})") from None
    if t.ema is not None:
        if state["ema"] is None:
            raise PgolfError(f"cannot resume {path}: it holds no EMA of the weights for optim.ema_decay")
        t.ema.load_state_dict(state["ema"], f"checkpoint {path}")
    t.loader.load_state_dict(state["loader"], f"checkpoint {path}")
    return {"path": path, "step": state["step"], "training_time_ms": state["training_time_ms"], "rng": state["rng"]}


def start_resumed(t: Trainer, resumed: dict) -> None:
    """The resumed run's clock, step and RNG (its weights, optimizer and loader are loaded; priming kept them)."""
    restore_rng(resumed["rng"], resumed["path"])
    t.step, t.clock.train_ms = resumed["step"], resumed["training_time_ms"]
    t.log.event("resumed", checkpoint=str(resumed["path"]), step=t.step, train_time_ms=t.clock.train_ms)
    if t.log.bar is not None:
        t.log.bar.update(t.step)
