"""Score an artifact file end to end: rebuild the model from it, load the val set, evaluate."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from pgolf.config import from_dict
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import evaluate
from pgolf.export.artifact import read_artifact
from pgolf.eval.packed import swap_in_packed_layers
from pgolf.quant.encoding import dequantize_state_dict
from pgolf.metric.valset import load_val_set
from pgolf.model import GPT, prepare_for_device, tokenizer_mismatch
from pgolf.distributed import init_distributed, shutdown


def model_from_artifact(path: str | Path, device: torch.device, packed: bool = False) -> tuple[GPT, dict]:
    """The model an artifact holds; with `packed`, its int6 layers run from the packed codes."""
    art = read_artifact(path)
    cfg = from_dict({"model": art.model_config}, f"{path} (model config)").model
    model = prepare_for_device(GPT(cfg), device)
    try:
        model.load_state_dict(dequantize_state_dict(art.tensors))
    except RuntimeError as e:  # the tensors do not fit the model the file's own config describes
        raise PgolfError(f"{path}: its tensors do not match its model config ({str(e).splitlines()[0]})") from None
    if packed and swap_in_packed_layers(model, art.tensors) == 0:
        raise PgolfError(f"{path} holds no int6 linear layers to run packed (export.matrix_bits=6 makes them)")
    return model, art.meta


def score_artifact(path: str | Path, *, data=None, tokenizer=None, seq_len=None, stride: int = 0,
                   batch_tokens: int = 524_288, device: str = "auto", packed: bool = False) -> dict | None:
    env = init_distributed(device)
    try:
        model, meta = model_from_artifact(path, env.device, packed)
        data = data or meta.get("data_path")
        tokenizer = tokenizer or meta.get("tokenizer_path")
        if not data or not tokenizer:
            raise PgolfError(f"{path} does not record its data: pass --data and --tokenizer")
        tok = load_tokenizer(tokenizer)
        mismatch = tokenizer_mismatch(model.cfg, tok.vocab_size, tok.bos_id)
        if mismatch:
            raise PgolfError(f"tokenizer {tokenizer} does not fit {path}: {mismatch}")
        seq_len = seq_len or meta.get("seq_len")
        if not seq_len:
            raise PgolfError(f"{path} does not record its sequence length: pass --seq-len")
        val = load_val_set(data, tok).to(env.device)
        windows = max(1, batch_tokens // (env.world * seq_len))
        t = time.perf_counter()
        result = evaluate(model, val, seq_len, stride, windows, env.rank, env.world)
        seconds = time.perf_counter() - t
        if not env.is_main:
            return None
        return {**result.as_dict(), "byte_source": val.byte_source, "seq_len": seq_len, "stride": stride, "packed": packed,
                "eval_seconds": seconds, "world_size": env.world, "artifact": str(path)}
    finally:
        shutdown()
