"""Score an artifact file end to end: rebuild the model from it, load the val set, evaluate."""
from __future__ import annotations

from pathlib import Path

import torch

from pgolf.config import Config, EvalConfig, from_dict, validate
from pgolf.data.tokenizer import load_tokenizer
from pgolf.errors import PgolfError
from pgolf.fileio import check_output_dir, sha256_file
from pgolf.eval.clock import EvalClock, timed_eval
from pgolf.eval.modes import EvalContext, save_ledger
from pgolf.export.artifact import Artifact, read_artifact
from pgolf.quant.encoding import dequantize_state_dict
from pgolf.metric.valset import load_val_set
from pgolf.model import GPT, prepare_for_device, tokenizer_mismatch
from pgolf.model.logit_calibration import attach_calibration, calibration_from_state
from pgolf.distributed import init_distributed, shutdown


def model_from_artifact(path: str | Path, device: torch.device, packed: bool = False,
                        clock: EvalClock | None = None) -> tuple[GPT, dict]:
    """The model an artifact holds; with `packed`, its int6 layers run from the packed codes.
    `clock` times the file's read (and decompression) and the model's build as two parts."""
    clock = clock or EvalClock(device)
    with clock.part("artifact_read"):
        art = read_artifact(path)
    with clock.part("model_build"):
        model = model_from_decoded(art, device, str(path))
        if packed:
            from pgolf.eval.packed import swap_in_packed_layers  # `pgolf eval --packed` only (trace.OPTIONAL)

            if swap_in_packed_layers(model, art.tensors) == 0:
                raise PgolfError(f"{path} holds no int6 linear layers to run packed (export.matrix_bits=6 makes them)")
    return model, art.meta


def model_from_decoded(art: Artifact, device: torch.device, source: str = "artifact") -> GPT:
    """The model of an artifact in memory (dequantized weights), with its logit calibration if it has one."""
    cfg = from_dict({"model": art.model_config}, f"{source} (model config)").model
    model, state = GPT(cfg), dequantize_state_dict(art.tensors)
    try:
        calibration = calibration_from_state(state)
    except ValueError as e:
        raise PgolfError(f"{source}: {e}") from None
    if calibration is not None:
        attach_calibration(model, calibration)
    model = prepare_for_device(model, device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # the tensors do not fit the model the file's own config describes
        raise PgolfError(f"{source}: its tensors do not match its model config ({str(e).splitlines()[0]})") from None
    return model


def _check_options(seq_len, stride: int, batch_tokens: int) -> None:
    if seq_len is not None and seq_len < 1:
        raise PgolfError(f"--seq-len must be a positive window length, got {seq_len} (omit it to use the recorded one)")
    if stride < 0:
        raise PgolfError(f"--stride must be 0 (non-overlapping windows) or positive, got {stride}")
    if batch_tokens < 1:
        raise PgolfError(f"--batch-tokens must be positive, got {batch_tokens}")


def _check_tokenizer_is_recorded(path, meta: dict, tokenizer) -> None:
    want = meta.get("tokenizer_sha256")
    if want is None:  # artifacts written before pgolf recorded it
        return
    got = sha256_file(tokenizer)
    if got != want:
        raise PgolfError(f"tokenizer {tokenizer} is not the one {path} was trained with "
                         f"(sha256 {got[:12]}… vs {want[:12]}…, recorded path {meta.get('tokenizer_path', '?')})")


def _window_length(path, meta: dict, seq_len, stride: int, n_tokens: int) -> int:
    """The window length to use: --seq-len (which must fit the val set), else the recorded one
    (clamped to the val set, as plan_windows does, so the printed length is the one used)."""
    targets = n_tokens - 1
    if seq_len is not None and seq_len > targets:
        raise PgolfError(f"--seq-len {seq_len} is longer than the val set's {targets:,} targets")
    if seq_len is None:
        seq_len = meta.get("seq_len")
        if not seq_len:
            raise PgolfError(f"{path} does not record its sequence length: pass --seq-len")
        seq_len = min(seq_len, targets)
    if stride > seq_len:
        raise PgolfError(f"--stride {stride} is longer than the window (seq_len {seq_len}); use 1..{seq_len}, "
                         "or 0 for non-overlapping windows")
    return seq_len


def recorded_eval_config(path, meta: dict, *, mode=None, stride=None, batch_tokens=None, doc_isolated=None,
                         ngram=None) -> EvalConfig:
    """The eval section the run recorded (older files: the defaults with their recorded stride),
    with the command line's overrides; checked as a config is."""
    recorded = meta.get("eval")
    cfg = Config()
    if isinstance(recorded, dict):
        cfg = from_dict({"eval": recorded}, f"{path} (recorded eval settings)")
    elif "stride" in meta:
        cfg.eval.stride = int(meta["stride"])
    given = []
    for name, value in (("mode", mode), ("stride", stride), ("batch_tokens", batch_tokens),
                        ("doc_isolated", doc_isolated)):
        if value is not None:
            setattr(cfg.eval, name, value)
            given.append(f"--{name.replace('_', '-')} {value}")
    if ngram is not None:  # the tilt on or off with the run's n-gram settings: a same-artifact ablation
        cfg.eval.ngram.enabled = ngram
        given.append(f"--{'' if ngram else 'no-'}ngram")
    cfg.train.seq_len = int(meta.get("seq_len") or cfg.train.seq_len)  # what eval.seq_len 0 means for this run
    # Only the eval section is checked here: a train batch of one window keeps the train rules out of it
    # (a recorded eval.seq_len of 2560 is no multiple of the default train batch).
    cfg.train.batch_tokens = cfg.train.seq_len
    try:
        validate(cfg)
    except PgolfError as e:
        raise PgolfError(f"{path}: {e}" + (f" (given {', '.join(given)})" if given else "")) from None
    return cfg.eval


def score_artifact(path: str | Path, *, data=None, tokenizer=None, seq_len=None, stride: int | None = None,
                   batch_tokens: int | None = None, mode: str | None = None, device: str = "auto",
                   packed: bool = False, doc_isolated: bool | None = None, ngram: bool | None = None,
                   ledger: str | Path | None = None) -> dict | None:
    """Score as the run would have: its recorded eval settings (eval.mode, stride, TTT, ...), each
    overridable here (None: recorded). `ledger`: where an adaptive mode's score ledger goes (C3,
    `pgolf check --ledger`); one file per rank (pgolf.eval.modes.ledger_path)."""
    _check_options(seq_len, stride or 0, batch_tokens or 1)
    if ledger is not None:
        if Path(ledger).is_dir():
            raise PgolfError(f"--ledger {ledger} is a directory; name a file (e.g. {Path(ledger) / 'ledger.npz'})")
        check_output_dir(Path(ledger).parent, "--ledger", ledger)
    env = init_distributed(device)
    clock = EvalClock(env.device)
    try:
        model, meta = model_from_artifact(path, env.device, packed, clock)
        eval_cfg = recorded_eval_config(path, meta, mode=mode, stride=stride, batch_tokens=batch_tokens,
                                        doc_isolated=doc_isolated, ngram=ngram)
        data = data or meta.get("data_path")
        tokenizer = tokenizer or meta.get("tokenizer_path")
        if not data or not tokenizer:
            raise PgolfError(f"{path} does not record its data: pass --data and --tokenizer")
        with clock.part("val_load"):
            tok = load_tokenizer(tokenizer)
            mismatch = tokenizer_mismatch(model.cfg, tok.vocab_size, tok.bos_id)
            if mismatch:
                raise PgolfError(f"tokenizer {tokenizer} does not fit {path}: {mismatch}")
            _check_tokenizer_is_recorded(path, meta, tokenizer)
            val = load_val_set(data, tok).to(env.device)
        seq_len = _window_length(path, meta, seq_len, eval_cfg.stride, len(val))
        report = timed_eval(clock, EvalContext(model, val, eval_cfg, seq_len, env))
        kept = report.pop("ledger")
        saved = save_ledger(kept, ledger, env) if ledger is not None else None
        if not env.is_main:
            return None
        if saved is not None:
            report["ledger"] = str(saved)
        return {**report.pop("result").as_dict(), "byte_source": val.byte_source, "mode": eval_cfg.mode,
                "seq_len": seq_len, "stride": eval_cfg.stride, "doc_isolated": eval_cfg.doc_isolated,
                "ngram": eval_cfg.ngram.enabled, "packed": packed, "eval_seconds": report["eval_total_seconds"],
                **report, "world_size": env.world, "artifact": str(path)}
    finally:
        shutdown()
