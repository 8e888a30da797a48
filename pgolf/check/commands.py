"""The `pgolf check` subcommand: argument parsing and hand-off."""
from __future__ import annotations

import argparse
from pathlib import Path

from pgolf.errors import PgolfError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="compliance harness: C1-C4 (issue #1017) and train/val disjointness (F10)",
                       description="Scores the first --tokens of the val stream with the eval mode and checks C1 "
                                   "(perturbation), C2 (normalisation), C3 (score ledger) and C4 (coverage, totals, "
                                   "bytes/token against the tokenizer's decode); scans train shards for val documents. "
                                   "Exits 1 if any check fails.")
    p.add_argument("--config", default="smoke", help="preset or .toml whose model, data and eval settings to check")
    p.add_argument("--artifact", type=Path, default=None,
                   help="check this artifact's weights (default: the preset's model with random weights)")
    p.add_argument("--mode", choices=["windows", "docs", "lora_ttt", "sliding_ttt"], default=None,
                   help="windows: pgolf's evaluator (eval.stride, eval.doc_isolated, eval.ngram); docs: length-sorted "
                        "document packing (TTT batching). Default: windows (with --artifact: the mode it records)")
    p.add_argument("--tokens", type=int, default=4096, help="val tokens the model-run checks score (default 4096)")
    p.add_argument("--cuts", type=int, default=4, help="C1 perturbation cut points (default 4, plus one at a BOS)")
    p.add_argument("--ledger", type=Path, default=None, help="a score ledger (.npz) saved by an eval run: check C3 on it")
    p.add_argument("--no-disjoint", action="store_true", help="skip the train/val document scan")
    p.add_argument("--workers", type=int, default=1, help="processes for the train shard scan (default 1)")
    p.add_argument("--world-size", type=int, default=8,
                   help="GPUs of the run whose training step the overlap scan reports (default 8, the record track)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.path=...")
    p.set_defaults(func=_check)


def _check(args) -> None:
    import sys

    from pgolf.check.harness import CheckPlan, format_table, random_weights, timed_checks
    from pgolf.config import load_config
    from pgolf.data.tokenizer import load_tokenizer
    from pgolf.model import GPT

    cfg = load_config(args.config, args.overrides)
    if args.tokens < 2:
        raise PgolfError(f"--tokens must be at least 2, got {args.tokens}")
    tok = load_tokenizer(cfg.data.tokenizer)
    if args.artifact is not None:
        import torch

        from pgolf.eval.scoring import model_from_artifact

        model, meta = model_from_artifact(args.artifact, torch.device("cpu"))
        eval_cfg, seq_len = _recorded_eval(args.artifact, meta)
    else:
        model = random_weights(GPT(cfg.model))
        eval_cfg, seq_len = cfg.eval, cfg.eval.seq_len or cfg.train.seq_len
    mode = _check_mode(args.mode, eval_cfg, seq_len, tok.bos_id, model.cfg)
    plan = CheckPlan(Path(cfg.data.path), tok, mode, n_tokens=args.tokens, cuts=args.cuts, ledger=args.ledger,
                     disjoint=not args.no_disjoint, tokens_per_step=_tokens_per_step(cfg, args.world_size),
                     workers=args.workers)
    rows, seconds = timed_checks(model, plan)
    print(format_table(rows, mode.name, seconds))
    if not all(r.passed for r in rows):
        sys.exit(1)


def _recorded_eval(path, meta: dict):
    """The artifact's own eval settings (meta["eval"]: mode, stride, seq_len, doc_isolated, ngram), as
    `pgolf eval` reads them, and its window length (eval.seq_len, else the training one it records)."""
    from pgolf.eval.scoring import recorded_eval_config

    eval_cfg = recorded_eval_config(path, meta)
    seq_len = eval_cfg.seq_len or meta.get("seq_len")
    if not seq_len:
        raise PgolfError(f"{path} does not record its sequence length")
    return eval_cfg, int(seq_len)


def _check_mode(name, eval_cfg, seq_len: int, bos_id: int, model_cfg):
    """The check mode for --mode (None: the eval section's own mode, which must be one pgolf check has)."""
    from pgolf.check.modes import LoraTTTMode, PackedDocsMode, SlidingTTTMode, WindowsMode

    name = name or eval_cfg.mode
    if name == "docs":
        if not model_cfg.doc_isolation:
            raise PgolfError("--mode docs packs several documents in a row: it needs model.doc_isolation=true")
        return PackedDocsMode(seq_len, bos_id, ngram=eval_cfg.ngram)
    if name == "lora_ttt":
        return LoraTTTMode(eval_cfg.ttt, bos_id, ngram=eval_cfg.ngram)
    if name == "sliding_ttt":
        return SlidingTTTMode(seq_len, eval_cfg.stride, eval_cfg.ttt, bos_id, batch_tokens=eval_cfg.batch_tokens)
    return WindowsMode(seq_len, eval_cfg.stride, doc_isolated=eval_cfg.doc_isolated, ngram=eval_cfg.ngram,
                       bos_id=bos_id)


def _tokens_per_step(cfg, world: int) -> int:
    """Stream tokens one optimizer step of that run reads (its loader's batch plus one token per micro-batch)."""
    from pgolf.data.overlap import tokens_per_step
    from pgolf.train.trainer import grad_accum_steps

    if world < 1:
        raise PgolfError(f"--world-size must be at least 1, got {world}")
    return tokens_per_step(cfg.train.batch_tokens, world, grad_accum_steps(cfg, world))
