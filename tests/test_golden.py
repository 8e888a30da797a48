"""Golden loss curves: each preset, scaled to a CPU, trains its first steps to the recorded
losses, so a refactor cannot change training silently.

Tolerance: |loss - golden| <= 2e-4 nats per step (the runs are deterministic on one machine;
the slack covers other CPUs' float reductions, far below any real change: a different init
order or LR moves step 1 onwards by > 1e-2).

A change that is meant to change training (e.g. a new parameter role for the gdn matrices)
regenerates the curves and says why in its commit:

    PGOLF_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py -p no:cacheprovider
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from attention_reference import DenseReference
from conftest import train_losses
from pgolf.config import load_config
from pgolf.data.tokenizer import load_tokenizer
from pgolf.fileio import atomic_write_bytes
from pgolf.train.trainer import run_training

GOLDEN = Path(__file__).parent / "golden" / "curves.json"
TOLERANCE = 2e-4
STEPS = 8
# The CPU scale of every preset: a short, step-scheduled, uncompiled run on the tests' tiny data,
# 16 sequences of 64 tokens per step (the export is rtn + zlib: it runs after the curve and
# is not part of it). Everything not named here is the preset's own value.
COMMON = ["train.seq_len=64", "train.batch_tokens=1024", "train.grad_accum_steps=1", f"train.iterations={STEPS}",
          "train.warmup_steps=0", "train.warmdown_iters=3", "train.warmdown=step", "train.max_wallclock_seconds=0",
          "train.val_every=0", "train.log_every=1", "eval.batch_tokens=4096", "eval.stride=0", "run.progress=false",
          "run.compile=false", "export.method=rtn", "export.codec=zlib"]
SCALE = {
    "smoke": [],
    "baseline": ["model.model_dim=64"],
    "gdn": ["model.vocab_size=1024", "model.num_layers=4", "model.model_dim=64", "model.num_heads=4",
            "model.gdn_head_dim=16", "model.gdn_chunk_size=16", "model.bigram_buckets=64", "model.bigram_dim=16"],
    # all 11 layers (loop 3-5, lanes from 8) at width 64: head dim 32 with 16 rotated, recurrence on at
    # step 3 of 8 (0.35 of the steps: uncapped runs count steps); fused CE and MLP run their torch paths;
    # the record's fraction warmdown (0.85 of the steps, floor 0.1) and EMA; the stream loader (packed rows
    # train on CUDA only) and the plain final eval (TTT has its own tests; the n-gram tilt stays on)
    "record_1855": (RECORD_SCALE := ["model.vocab_size=1024", "model.model_dim=64", "model.num_heads=2",
                                     "model.num_kv_heads=1", "train.warmdown_iters=0", "train.loader=stream",
                                     "eval.mode=windows"]),
    "frontier": [*RECORD_SCALE, "eval.seq_len=80"],  # its longer eval window (2560 vs 2048), scaled
}
# Presets that train document-isolated attention, which has no CPU backward in torch (flex) or
# needs CUDA (flash): on the CPU they train through the dense-mask reference (the same function).
DENSE_ON_CPU = ("record_1855", "frontier")


def vocab_fingerprint(path) -> str:
    """The tokenizer's pieces and scores (the .model file's bytes also hold its training paths)."""
    sp = load_tokenizer(path).sp
    text = "\n".join(f"{sp.id_to_piece(i)} {sp.get_score(i)}" for i in range(sp.vocab_size()))
    return hashlib.sha256(text.encode()).hexdigest()


def curve(preset: str, tiny_data, out_dir) -> list[float]:
    data, tok = tiny_data
    cfg = load_config(preset, [*COMMON, *SCALE[preset], f"data.path={data}", f"data.tokenizer={tok}",
                               f"run.out_dir={out_dir}", "run.name=golden"], env={})
    result = run_training(cfg, preset=preset)
    return train_losses(result.run_dir)


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p in DENSE_ON_CPU else p
                                    for p in SCALE])  # the 11-layer record stacks take ~30 s each
def test_golden_curve(preset, tiny_data, tmp_path, monkeypatch):
    if preset in DENSE_ON_CPU:
        monkeypatch.setattr("pgolf.model.gpt.choose_backend", lambda name, doc_isolation: DenseReference())
    losses = curve(preset, tiny_data, tmp_path)
    assert len(losses) == STEPS
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    tokenizer = vocab_fingerprint(tiny_data[1])
    if os.environ.get("PGOLF_UPDATE_GOLDEN") == "1":
        recorded[preset] = {"losses": losses, "tokenizer_vocab_sha256": tokenizer}
        atomic_write_bytes(GOLDEN, (json.dumps(recorded, indent=1, sort_keys=True) + "\n").encode())
        pytest.skip(f"{preset}: golden curve regenerated in {GOLDEN}")
    assert preset in recorded, f"no golden curve for {preset}: run with PGOLF_UPDATE_GOLDEN=1"
    golden = recorded[preset]
    worst = max(abs(a - b) for a, b in zip(losses, golden["losses"]))
    hint = "" if golden["tokenizer_vocab_sha256"] == tokenizer else (
        " (the tests' tokenizer differs from the one the curves were recorded with)")
    assert worst <= TOLERANCE, f"{preset}: losses {losses} left the golden curve {golden['losses']} by {worst:.2e}{hint}"
