"""Export a trained model: quantize, pack, count the bytes, enforce the limit, write.

The challenge's limit is on artifact + code: strictly below 16,000,000 bytes (decimal).
`export_model` raises before anything is written if the total is at or above it.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

import pgolf
from pgolf.config import Config, ExportConfig
from pgolf.errors import PgolfError
from pgolf.export.artifact import Artifact, encode_artifact, read_artifact, write_artifact
from pgolf.export.code_size import count_code_bytes
from pgolf.export.quantize import dequantize_state_dict, quantize_state_dict

SIZE_LIMIT = 16_000_000


class ArtifactTooLarge(PgolfError):
    pass


@dataclass(frozen=True)
class ExportReport:
    path: str
    quant: str
    codec: str
    artifact_bytes: int
    code_bytes: int
    code_mode: str
    total_bytes: int

    @property
    def headroom(self) -> int:
        return SIZE_LIMIT - self.total_bytes

    def summary(self) -> str:
        return (f"artifact {self.artifact_bytes:,} B ({self.quant}+{self.codec}) + code {self.code_bytes:,} B "
                f"({self.code_mode}) = {self.total_bytes:,} B, {self.headroom:,} B under the {SIZE_LIMIT:,} limit")


def run_meta(cfg: Config, steps: int) -> dict:
    """What an artifact records about its training run, so `pgolf eval` can score it as trained."""
    return {"steps": steps, "seed": cfg.run.seed, "seq_len": cfg.eval.seq_len or cfg.train.seq_len,
            "data_path": cfg.data.path, "tokenizer_path": cfg.data.tokenizer}


def build_artifact(state: dict[str, Tensor], model_config: dict, cfg: ExportConfig, meta: dict | None = None) -> Artifact:
    meta = {"pgolf_version": pgolf.__version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **(meta or {})}
    return Artifact(model_config, cfg.quant, cfg.codec, quantize_state_dict(state, cfg.quant), meta)


def export_model(state: dict[str, Tensor], model_config: dict, cfg: ExportConfig, path: str | Path,
                 meta: dict | None = None) -> tuple[ExportReport, Artifact]:
    art = build_artifact(state, model_config, cfg, meta)
    blob = encode_artifact(art)
    code = count_code_bytes(cfg.code_bytes)
    report = ExportReport(str(path), cfg.quant, cfg.codec, len(blob), code.counted_bytes, code.mode,
                          len(blob) + code.counted_bytes)
    if report.total_bytes >= SIZE_LIMIT:
        raise ArtifactTooLarge(
            f"not exported: artifact {report.artifact_bytes:,} B + code {report.code_bytes:,} B ({code.mode}) = "
            f"{report.total_bytes:,} B, which is not below the {SIZE_LIMIT:,}-byte limit")
    write_artifact(path, blob)
    return report, art


def load_artifact_state(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(model_config dict, dequantized state dict) from an artifact file."""
    art = read_artifact(path)
    return art.model_config, dequantize_state_dict(art.tensors)
