"""`pgolf eval ARTIFACT`: score an artifact file on a val set (also under torchrun)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgolf.config import EVAL_MODES


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="score an artifact: val_loss and val_bpb through the canonical accumulator",
                       description="Also runs distributed: torchrun --nproc_per_node=8 -m pgolf eval ARTIFACT ...")
    e.add_argument("artifact", type=Path)
    e.add_argument("--data", type=Path, default=None, help="dataset directory (default: the one it was trained on)")
    e.add_argument("--tokenizer", type=Path, default=None, help="SentencePiece model (default: the training one)")
    e.add_argument("--seq-len", type=int, default=None, help="window length (default: the training seq_len)")
    e.add_argument("--stride", type=int, default=None,
                   help="sliding-window stride; 0 = non-overlapping windows (default: the run's eval.stride, "
                        "recorded in the artifact, so the file scores as its run did)")
    e.add_argument("--batch-tokens", type=int, default=None,
                   help="tokens per forward, summed over ranks (VAL_BATCH_SIZE; default: the run's; the reference "
                        "also divides by 8 // world_size: see README); never more windows than the val set has")
    e.add_argument("--mode", choices=EVAL_MODES, default=None,
                   help="how to score (default: the run's eval.mode, recorded in the artifact)")
    e.add_argument("--doc-isolated", action=argparse.BooleanOptionalAction, default=None,
                   help="score each document on its own (eval.doc_isolated; default: the run's)")
    e.add_argument("--ngram", action=argparse.BooleanOptionalAction, default=None,
                   help="the n-gram tilt on or off with the run's eval.ngram settings (default: the run's)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--packed", action="store_true", help="run int6 layers straight from the packed codes (int6_matmul)")
    e.add_argument("--ledger", type=Path, default=None,
                   help="write a TTT mode's score ledger here (one per rank: .rank<r> before the suffix), "
                        "for pgolf check --ledger (C3)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=_eval)


def _eval(args) -> None:
    from pgolf.eval.scoring import score_artifact

    result = score_artifact(args.artifact, data=args.data, tokenizer=args.tokenizer, seq_len=args.seq_len,
                            stride=args.stride, batch_tokens=args.batch_tokens, mode=args.mode, device=args.device,
                            packed=args.packed, doc_isolated=args.doc_isolated, ngram=args.ngram, ledger=args.ledger)
    if result is None:  # not rank 0
        return
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"val_bpb {result['val_bpb']:.8f}  val_loss {result['val_loss']:.8f}  "
              f"({result['token_count']:,} tokens, {result['byte_count']:,} bytes, {result['byte_source']}, "
              f"{result['mode']}, seq_len {result['seq_len']}, stride {result['stride']}, {result['eval_seconds']:.1f} s)")
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in result["eval_parts"].items())
        proj = result["eval_projection_8xh100"]
        print(f"eval clock: {parts}; total {result['eval_total_seconds']:.1f} s; "
              + (f"8×H100 projection {proj['seconds']:.1f} s ({proj['assumption']})" if proj else
                 "no 8×H100 projection (measured on a CPU)"))
