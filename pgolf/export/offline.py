"""Exporting outside a training run: a state dict (a checkpoint's for `pgolf export`, a test's, a
benchmark's) to an artifact file in one call, an artifact back to a state dict, and the report's
per-stream table. A run builds and writes its artifact in stages (pgolf.export.export), so none of
this is run-time code.
"""
from __future__ import annotations

import time
from pathlib import Path

from torch import Tensor

from pgolf.config import Config, ExportConfig
from pgolf.export.artifact import Artifact, read_artifact
from pgolf.export.export import ExportReport, build_artifact, write_export
from pgolf.model import Role
from pgolf.quant.encoding import dequantize_state_dict


def export_model(state: dict[str, Tensor], model_config: dict, cfg: ExportConfig, path: str | Path,
                 meta: dict | None = None, hessians: dict[str, Tensor] | None = None,
                 roles: dict[str, Role] | None = None, run_config: Config | None = None) -> tuple[ExportReport, Artifact]:
    """Write the artifact if it and the code fit under the limit. The code counted is what a run of
    `run_config` needs (default: the model and export settings given, every other section at its defaults)."""
    t0 = time.perf_counter()
    art = build_artifact(state, model_config, cfg, meta, hessians, roles)
    quantize_seconds = time.perf_counter() - t0
    return write_export(art, cfg, path, sum(t.numel() for t in state.values()), run_config, quantize_seconds), art


def load_artifact_state(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(model_config dict, dequantized state dict) from an artifact file."""
    art = read_artifact(path)
    return art.model_config, dequantize_state_dict(art.tensors)


def parts_table(report: ExportReport) -> str:
    """The report's streams, one line each (codec, raw and stored bytes)."""
    return "\n".join(f"  {s.name:<10} {s.codec:<7} {s.raw_bytes:>12,} B raw -> {s.stored_bytes:>11,} B"
                     for s in report.streams)
