"""Export variants of one trained checkpoint: bytes, bits per weight, and val_bpb of the file.

Each variant is exported from the same checkpoint (GPTQ variants need a checkpoint from a
run with export.method=gptq, which stores its Hessians) and scored from the written
artifact, so the table shows what each quantization and layout costs and saves.

    python benchmarks/bench_export.py runs/<run>/checkpoint.pt [--device cpu]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import header
from pgolf.config import from_dict, set_from_text
from pgolf.eval.scoring import score_artifact
from pgolf.export.export import run_meta
from pgolf.export.offline import export_model
from pgolf.train.checkpoint_read import load_checkpoint

VARIANTS = {
    "rtn int8, plain, zlib (baseline)": ["export.method=rtn", "export.matrix_bits=8", "export.embed_bits=8",
                                         "export.layout=plain", "export.codec=zlib"],
    "rtn int6, grouped, auto": ["export.method=rtn", "export.matrix_bits=6", "export.embed_bits=8",
                                "export.layout=grouped", "export.codec=auto"],
    "gptq int6, grouped, auto": ["export.method=gptq", "export.matrix_bits=6", "export.embed_bits=8",
                                 "export.layout=grouped", "export.codec=auto"],
    "gptq int6 + int7 embed, grouped, auto": ["export.method=gptq", "export.matrix_bits=6", "export.embed_bits=7",
                                              "export.layout=grouped", "export.codec=auto"],
    "gptq int6 + int7 embed + LQER top-3, grouped, auto": ["export.method=gptq", "export.matrix_bits=6",
                                                          "export.embed_bits=7", "export.lqer_top=3",
                                                          "export.layout=grouped", "export.codec=auto"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-tokens", type=int, default=65_536)
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    state = load_checkpoint(args.checkpoint)
    hessians = state.get("hessians")
    print(f"checkpoint: {args.checkpoint} (step {state['step']}, Hessians: {'yes' if hessians else 'no'})\n")
    print("| variant | artifact bytes | bits/weight | val_bpb (from the file) | streams |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in VARIANTS.items():
            cfg = from_dict(state["config"], str(args.checkpoint))
            for item in overrides:
                set_from_text(cfg, *item.split("=", 1), "variant")
            if cfg.export.method == "gptq" and not hessians:
                print(f"| {name} | - | - | - | needs a checkpoint with Hessians |")
                continue
            path = Path(tmp) / "a.pgolf"
            report, _ = export_model(state["model"], cfg.to_dict()["model"], cfg.export, path,
                                     meta=run_meta(cfg, state["step"]), hessians=hessians)
            result = score_artifact(path, batch_tokens=args.batch_tokens, device=args.device)
            streams = ", ".join(f"{s.name}:{s.codec}:{s.stored_bytes}" for s in report.streams if s.name != "index")
            print(f"| {name} | {report.artifact_bytes:,} | {report.bits_per_weight:.3f} | {result['val_bpb']:.4f} | "
                  f"{streams} |")


if __name__ == "__main__":
    main()
