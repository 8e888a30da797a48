"""Training and eval throughput for the GPU suite, on synthetic tokens.

Training: for the baseline preset and every preset with more parameters, one optimizer step
as the trainer takes it on one GPU (the preset's global batch in grad_accum micro-batches,
bf16 autocast, Muon + Adam, torch.compile when the preset compiles): the time to the end of
the first step (compilation included) apart, then ms/step and tokens/s over a few steps
after warm-up. The challenge's reference train_gpt.py, when given, runs on the same GPU on
synthetic shards in its own process and its logged train_time is read back.

Eval: the plain evaluator (non-overlapping windows) over a synthetic val stream.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from suite_core import Context, sync

# --dry-run: every preset at its own depth (layer-indexed settings, e.g. loop_layers, stay valid) but
# tiny width and length; document isolation off, because no pgolf attention backend trains it on a
# CPU (flex has no CPU backward), so packed rows fall back to the stream loader there.
TINY = ["model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1", "model.doc_isolation=false",
        "model.gdn_head_dim=16", "model.bigram_dim=16", "train.seq_len=64", "train.batch_tokens=256",
        "train.grad_accum_steps=2", "train.loader=stream", "eval.batch_tokens=512"]


def preset_names() -> list[str]:
    from pgolf.config import PRESET_DIR

    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def param_count(preset: str) -> int:
    """Parameters of a preset's model, built on the meta device (no memory, no init cost)."""
    from pgolf.config import load_config
    from pgolf.model import GPT

    cfg = load_config(preset, env={})
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg.model).parameters())


def presets_to_time(requested: list[str] | None) -> list[tuple[str, int]]:
    """The baseline, then every preset with more parameters (smallest first), or those asked for."""
    sizes = {name: param_count(name) for name in (requested or preset_names())}
    if requested:
        return [(n, sizes[n]) for n in requested]
    floor = sizes.get("baseline", 0)
    return sorted(((n, s) for n, s in sizes.items() if s >= floor), key=lambda ns: (ns[0] != "baseline", ns[1]))


def build(preset: str, ctx: Context):
    """(config, model, compiled model, optimizers) as the trainer builds them, on ctx.device.
    One place to follow pgolf's trainer if its set-up moves."""
    from pgolf.config import load_config
    from pgolf.model import GPT, prepare_for_device
    from pgolf.optim.build import build_optimizers

    cfg = load_config(preset, TINY if ctx.dry_run else [], env={})
    torch.manual_seed(0)
    model = prepare_for_device(GPT(cfg.model), ctx.device)
    backend = ctx.options.get("compile_backend", "inductor")
    fast = torch.compile(model, dynamic=False, fullgraph=True, backend=backend) if cfg.run.compile else model
    optimizers, _ = build_optimizers(model, cfg.optim)
    return cfg, model, fast, optimizers


def synthetic_batches(cfg, device, micro_tokens: int, count: int, seed: int = 0) -> list[tuple]:
    """Random token rows with a BOS at random document starts (doc isolation then splits there)."""
    g = torch.Generator().manual_seed(seed)
    rows = micro_tokens // cfg.train.seq_len
    out = []
    for _ in range(count):
        seq = torch.randint(0, cfg.model.vocab_size, (rows, cfg.train.seq_len + 1), generator=g)
        seq[torch.rand(seq.shape, generator=g) < 1 / 512] = cfg.model.bos_id
        seq[:, 0] = cfg.model.bos_id
        out.append((seq[:, :-1].to(device), seq[:, 1:].to(device)))
    return out


def train_step(model, fast, optimizers, batches, cfg, device) -> None:
    """The trainer's step on one GPU: accumulate the micro-batches, clip if the preset clips, step."""
    from pgolf.eval.evaluator import autocast_for

    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    for x, y in batches:
        with autocast_for(device):
            loss = fast(x, y, ce=cfg.train.ce)
        (loss / len(batches)).backward()
    if cfg.optim.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
    for opt in optimizers:
        opt.step()


def time_training(preset: str, ctx: Context) -> dict:
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    cfg, model, fast, optimizers = build(preset, ctx)
    accum = cfg.train.grad_accum_steps or 8  # one GPU: the baseline's 8 // world_size
    micro = cfg.train.batch_tokens // accum
    batches = synthetic_batches(cfg, ctx.device, micro, accum)
    sync(ctx.device)
    t0 = time.perf_counter()
    train_step(model, fast, optimizers, batches, cfg, ctx.device)
    sync(ctx.device)
    first_s = time.perf_counter() - t0
    warm, timed = (0, 1) if ctx.dry_run else (2, ctx.options.get("train_steps", 5))
    for _ in range(warm):
        train_step(model, fast, optimizers, batches, cfg, ctx.device)
    times = []
    for _ in range(timed):
        sync(ctx.device)
        t = time.perf_counter()
        train_step(model, fast, optimizers, batches, cfg, ctx.device)
        sync(ctx.device)
        times.append(time.perf_counter() - t)
    ms = 1e3 * statistics.median(times)
    row = {"item": f"pgolf {preset}", "params": sum(p.numel() for p in model.parameters()),
           "global_batch_tokens": cfg.train.batch_tokens, "grad_accum": accum, "seq_len": cfg.train.seq_len,
           "compile": cfg.run.compile, "first_step_s": round(first_s, 2), "ms_per_step": round(ms, 2),
           "ms_spread": round(1e3 * (max(times) - min(times)), 2), "steps_timed": timed,
           "tokens_per_s": round(cfg.train.batch_tokens / (ms / 1e3))}
    if ctx.device.type == "cuda":
        row["peak_mib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**20)
    ctx.options.setdefault("models", {})[preset] = (cfg, model, fast)
    return row


# ---------------------------------------------------------------------------------------
# The challenge's reference train_gpt.py (kept outside the project; its path is given)

STEP_LINE = re.compile(r"step:(\d+)/\d+ train_loss:\S+ train_time:(\d+(?:\.\d+)?)ms")


def write_reference_data(directory: Path, vocab: int, train_tokens: int, val_tokens: int) -> None:
    """Synthetic shards in the challenge's format (pgolf writes the same format)."""
    from pgolf.data.shard_writer import write_shard
    from pgolf.data.shards import shard_name

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_shard(directory / shard_name("train", 0), rng.integers(0, vocab, train_tokens, dtype=np.uint16))
    val = rng.integers(0, vocab, val_tokens, dtype=np.uint16)
    val[0] = 1
    write_shard(directory / shard_name("val", 0), val)


def steady_ms(log: str, skip: int = 2) -> tuple[float, int]:
    """ms/step from the reference's train_time lines, leaving out its first `skip` steps."""
    points = [(int(s), float(t)) for s, t in STEP_LINE.findall(log)]
    if len(points) < skip + 2:
        raise ValueError(f"the reference logged {len(points)} step lines; need at least {skip + 2}")
    (s0, t0), (s1, t1) = points[skip], points[-1]
    return (t1 - t0) / (s1 - s0), s1 - s0


def run_reference(ctx: Context) -> dict:
    script, tokenizer = ctx.options.get("reference"), ctx.options.get("reference_tokenizer")
    steps = 4 if ctx.dry_run else 12
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_reference_data(data, 1024, 524_288 * (steps + 4) + 1, 131_073)
        env = dict(os.environ, DATA_PATH=str(data), TOKENIZER_PATH=str(tokenizer), VOCAB_SIZE="1024",
                   ITERATIONS=str(steps), WARMUP_STEPS="2", MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="0",
                   TRAIN_LOG_EVERY="1", RUN_ID="pgolf_suite_reference", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp,
                           timeout=max(30.0, ctx.budget.left() - 5))
        wall = time.perf_counter() - t0
    log = r.stdout + r.stderr
    if r.returncode:
        raise RuntimeError(f"the reference exited {r.returncode}: {log[-800:]}")
    ms, n = steady_ms(log)
    return {"item": f"reference {Path(script).name}", "global_batch_tokens": 524_288, "grad_accum": 8,
            "ms_per_step": round(ms, 2), "steps_timed": n, "tokens_per_s": round(524_288 / (ms / 1e3)),
            "wall_s_incl_compile_and_eval": round(wall, 1)}


def train_part(ctx: Context) -> None:
    presets = presets_to_time(ctx.options.get("presets"))
    estimate = lambda n: 8 if ctx.dry_run else (90 if n == "baseline" else 150)
    for name, _ in presets[:1]:
        if ctx.allows("train", f"pgolf {name}", estimate(name)):
            ctx.record("train", time_training(name, ctx))
    reference_row(ctx)
    for name, _ in presets[1:]:
        if ctx.allows("train", f"pgolf {name}", estimate(name)):
            ctx.record("train", time_training(name, ctx))


def reference_row(ctx: Context) -> None:
    """The reference's step, and pgolf's baseline step as a multiple of it (target <= 1.0)."""
    script = ctx.options.get("reference")
    if not script:
        ctx.record("train", {"item": "reference train_gpt.py", "status": "skipped",
                             "note": "no --reference given (its source stays out of the project)"})
        return
    if not ctx.options.get("reference_tokenizer"):
        ctx.record("train", {"item": "reference train_gpt.py", "status": "skipped",
                             "note": "--reference needs --reference-tokenizer (an sp1024 .model)"})
        return
    if not ctx.allows("train", "reference train_gpt.py", 8 if ctx.dry_run else 120):
        return
    row = run_reference(ctx)
    ours = next((r for r in ctx.results.get("train", []) if r.get("item") == "pgolf baseline"), None)
    if ours and "ms_per_step" in ours:
        row.update(pgolf_baseline_ratio=round(ours["ms_per_step"] / row["ms_per_step"], 3), target=1.0,
                   met=bool(ours["ms_per_step"] <= row["ms_per_step"]))
    ctx.record("train", row)


# ---------------------------------------------------------------------------------------
# Eval throughput


def synthetic_val(vocab: int, bos: int, tokens: int, device):
    from pgolf.metric.valset import ValSet

    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, vocab, (tokens,), generator=g, dtype=torch.int32)
    t[torch.rand(tokens, generator=g) < 1 / 512] = bos
    t[0] = bos
    nbytes = torch.randint(1, 4, (tokens,), generator=g, dtype=torch.int32)
    return ValSet(t.to(device), nbytes.to(device), "lut", bos)


def eval_part(ctx: Context) -> None:
    from pgolf.eval.evaluator import evaluate

    cfg, model, fast = ctx.options.get("models", {}).get("baseline") or build("baseline", ctx)[:3]
    seq = cfg.eval.seq_len or cfg.train.seq_len
    windows = max(1, cfg.eval.batch_tokens // seq)
    tokens = 16 * seq + 1 if ctx.dry_run else ctx.options.get("eval_tokens", 8 * 2**20) + 1
    val = synthetic_val(cfg.model.vocab_size, cfg.model.bos_id, tokens, ctx.device)
    sync(ctx.device)
    t0 = time.perf_counter()
    evaluate(fast, synthetic_val(cfg.model.vocab_size, cfg.model.bos_id, windows * seq + 1, ctx.device), seq,
             0, windows)  # compiles the eval graph and warms up
    sync(ctx.device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = evaluate(fast, val, seq, 0, windows)
    sync(ctx.device)
    seconds = time.perf_counter() - t0
    ctx.record("eval", {"item": "plain evaluator, baseline preset", "stride": 0, "seq_len": seq,
                        "windows_per_batch": windows, "tokens": result.token_count,
                        "first_pass_s": round(first, 2), "seconds": round(seconds, 3),
                        "tokens_per_s": round(result.token_count / seconds), "compile": cfg.run.compile})
    if ctx.allows("eval", "lora_ttt, record_1855 preset", 8 if ctx.dry_run else 90):
        ctx.record("eval", ttt_row(ctx))


# The val stream's size and mean document length (challenge-spec §1.4: 47,851,520 scored tokens in 50,000
# documents), for the TTT row's synthetic stream and its linear projection to the whole stream on 8 GPUs.
VAL_TOKENS, VAL_MEAN_DOC = 47_851_520, 957
TTT_TINY = ["eval.ttt.seq_len=64", "eval.ttt.chunk_size=16", "eval.ttt.batch_docs=8", "eval.ttt.lora_rank=4",
            "eval.ttt.prefix_docs=8", "eval.ttt.global_chunk_tokens=256", "eval.ttt.global_batch_seqs=4"]


def synthetic_documents(vocab: int, bos: int, tokens: int, mean_doc: int, device):
    """A stream with BOS-started documents of about `mean_doc` tokens (TTT's batches are per document)."""
    from pgolf.metric.valset import ValSet

    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, vocab, (tokens,), generator=g, dtype=torch.int32)
    t[t == bos] = (bos + 1) % vocab
    t[torch.rand(tokens, generator=g) < 1 / mean_doc] = bos
    t[0] = bos
    nbytes = torch.randint(1, 4, (tokens,), generator=g, dtype=torch.int32)
    return ValSet(t.to(device), nbytes.to(device), "lut", bos)


def ttt_row(ctx: Context, preset: str = "record_1855") -> dict:
    """The preset's own eval (score-first LoRA TTT with its global SGD phase) on a synthetic stream
    (random weights: the cost does not depend on them), by part, and the whole val stream on 8 GPUs
    projected linearly from it (an assumption: TTT's batches are independent, so time scales with
    tokens and divides over ranks; the phases' share and the longest documents make it approximate)."""
    from pgolf.config import load_config
    from pgolf.distributed import DistEnv
    from pgolf.eval.modes import EvalContext, run_eval
    from pgolf.model import GPT, prepare_for_device

    cfg = load_config(preset, [*TINY, *TTT_TINY] if ctx.dry_run else [], env={})
    torch.manual_seed(0)
    model = prepare_for_device(GPT(cfg.model), ctx.device)
    tokens = 4_000 if ctx.dry_run else ctx.options.get("ttt_tokens", 2**18)
    val = synthetic_documents(cfg.model.vocab_size, cfg.model.bos_id, tokens, 64 if ctx.dry_run else VAL_MEAN_DOC,
                              ctx.device)
    sync(ctx.device)
    t0 = time.perf_counter()
    outcome = run_eval(EvalContext(model, val, cfg.eval, cfg.eval.seq_len or cfg.train.seq_len,
                                   DistEnv(0, 1, 0, ctx.device)))
    sync(ctx.device)
    seconds = time.perf_counter() - t0
    t = cfg.eval.ttt
    return {"item": f"{cfg.eval.mode}, {preset} preset (random weights)", "tokens": outcome.result.token_count,
            "lora_rank": t.lora_rank, "batch_docs": t.batch_docs, "window": t.seq_len, "chunk": t.chunk_size,
            "phases": t.phases, "seconds": round(seconds, 2),
            "seconds_by_part": {k: round(v, 2) for k, v in outcome.seconds.items()},
            "tokens_per_s": round(outcome.result.token_count / seconds),
            "projected_full_val_8gpu_s": round(seconds * VAL_TOKENS / outcome.result.token_count / 8, 1),
            "projection": "linear in tokens, divided over 8 ranks (assumed, not measured on 8 GPUs)"}
